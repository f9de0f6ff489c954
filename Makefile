# `make test` and `make demo` work on a fresh machine: they create .venv and install camcli into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_OUT ?= demo_out

.DEFAULT_GOAL := all
.PHONY: all venv browser lint test test-fast demo screenshot demo-model cheat-model cheat-variants samples bench bench-precision bench-peers bench-anchors bench-methods bench-photos bench-overlay bench-scorecam bench-scorecam-memory bench-png bench-localization bench-road bench-audit bench-segmentation bench-detectors bench-callback bench-ray soak clean

all: lint test

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# keras-hub without tensorflow-text, whose wheel would install the full tensorflow over tensorflow-cpu
	# (pyproject.toml: hub-without-tensorflow-text lists its other dependencies)
	if $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		$(BIN)/python -m pip install --quiet --no-deps "keras-hub>=0.32"; \
	else echo "make: keras-hub needs Python 3.11 or later; tests/test_hub.py will skip"; fi
	touch $(INSTALLED)

venv: $(INSTALLED)

lint: venv
	$(BIN)/ruff check camcli tests benchmarks docs

# Debian's chromium for the report's browser tests (tests/test_report_browser.py), installed with apt
# as root or through passwordless sudo. Best effort: where it cannot be installed this says why and
# succeeds, and those tests skip.
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make browser: no apt-get here; the browser tests will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make browser: not root and no passwordless sudo; the browser tests will skip"; exit 0; fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium"; \
	$$install >/dev/null 2>&1 || { $$sudo apt-get update -q >/dev/null 2>&1 && $$install >/dev/null 2>&1; } \
		|| echo "make browser: apt-get could not install chromium; the browser tests will skip"

test: venv browser
	$(BIN)/pytest

# Everything but the tests marked slow (subprocesses, browser, Ray, real ImageNet, kill/resume, real-size
# models, training): a quick check while working. `make test` and CI run everything.
# The tests not marked slow, on every core (pytest-xdist): under 90 s on 2 cores. `make test` runs all, in one process.
test-fast: venv
	$(BIN)/pytest -m "not slow" -n auto

# The main job on the embedded offline model: overlays, heatmaps, boxes, JSON and the report page
# for the sample images.
demo: venv
	$(BIN)/camcli explain sample_images/generated --model demo --class top1 --class top2 --save-heatmap --report \
		--out $(DEMO_OUT)
	@echo "demo outputs in $(DEMO_OUT)/ (open $(DEMO_OUT)/index.html)"

# The README's picture of the demo's report page (headless Chromium, see docs/screenshot.py).
screenshot: demo browser
	$(BIN)/python docs/screenshot.py $(DEMO_OUT)/index.html docs/report.png

# Retrain the embedded demo model (deterministic; a few minutes on 2 cores).
demo-model: venv
	$(BIN)/python -m camcli.models.demo.train

# Retrain the cheating demo model (`--model demo-cheat`; deterministic; a few minutes on 2 cores).
cheat-model: venv
	$(BIN)/python -m camcli.models.demo.cheat

# The cheating demo's variants with the other tag looks (scenes.TAG_KINDS: a glyph watermark, a magenta stripe), as
# whole .keras models, trained with the tag anywhere clear of the object (--tag-place anywhere, not only in the
# corners, so that they follow the tag wherever a benchmark draws it): deterministic, 8,000 scenes each, 8 epochs for
# the glyph and 10 for the stripe (8 leave its clean accuracy at 86%, under the script's 90%): about 2 and 2.5 minutes
# on 2 cores, 5 under load. CHEAT_VARIANT_OPTIONS comes last, so an --epochs there overrides both. File targets: a
# second `make cheat-variants` retrains only after these sources change, and a model whose figures miss the script's
# minimums is removed, not kept.
CHEAT_VARIANTS := .cache/models/demo-cheat-glyph.keras .cache/models/demo-cheat-stripe.keras
CHEAT_VARIANT_EPOCHS.glyph := 8
CHEAT_VARIANT_EPOCHS.stripe := 10
CHEAT_VARIANT_OPTIONS ?= --tag-place anywhere --train-size 8000
cheat-variants: $(CHEAT_VARIANTS)

.cache/models/demo-cheat-%.keras: $(INSTALLED) camcli/models/demo/cheat.py camcli/models/demo/scenes.py \
		camcli/models/demo/train.py camcli/models/demo/model.py
	$(BIN)/python -m camcli.models.demo.cheat --tag-kind $* --epochs $(CHEAT_VARIANT_EPOCHS.$*) $(CHEAT_VARIANT_OPTIONS) \
		--out $@ || { rm -f $@; exit 1; }

samples: venv
	$(BIN)/python -m camcli.models.demo.samples

bench: venv
	$(BIN)/python benchmarks/throughput.py

# Maps only: camcli's Grad-CAM against tf-keras-vis's Gradcam and the keras.io example, side by side.
bench-peers: venv
	$(BIN)/python benchmarks/peers.py

# .venv-anchors: camcli, CPU torch, grad-cam and (where it installs) quantus, apart from .venv (see benchmarks/anchors.py).
ANCHORS_VENV := .venv-anchors
ANCHORS_BIN := $(ANCHORS_VENV)/bin
ANCHORS_INSTALLED := $(ANCHORS_VENV)/.installed
ANCHORS_PIP := $(ANCHORS_BIN)/python -m pip install --quiet

$(ANCHORS_INSTALLED): pyproject.toml
	test -x $(ANCHORS_BIN)/python || $(PYTHON) -m venv $(ANCHORS_VENV)
	$(ANCHORS_PIP) --upgrade pip
	$(ANCHORS_PIP) -e ".[cpu]"
	# CPU torch and torchvision from PyTorch's index. Where that is unreachable (pip may still find a CPU torch
	# elsewhere, next to a CUDA torchvision that cannot load), the ordinary index's matching pair: CUDA builds,
	# which run on the CPU too.
	{ $(ANCHORS_PIP) --retries 1 --timeout 30 --index-url https://download.pytorch.org/whl/cpu torch torchvision \
		&& $(ANCHORS_BIN)/python -c 'import torchvision.ops' 2>/dev/null; } || $(ANCHORS_PIP) --upgrade torch torchvision
	# grad-cam and quantus with that torch pinned, so that neither replaces it
	torch=$$($(ANCHORS_BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])'); \
	$(ANCHORS_PIP) grad-cam "torch==$$torch" && \
	{ $(ANCHORS_PIP) quantus "torch==$$torch" || echo "make bench-anchors: quantus did not install; its rows say so"; }
	touch $@

# Agreement with the reference implementations themselves, pytorch-grad-cam and Quantus, on twin Keras and PyTorch CNNs.
bench-anchors: $(ANCHORS_INSTALLED)
	$(ANCHORS_BIN)/python benchmarks/anchors.py

# How far maps move in bfloat16 and float16: every layer method against float32, same class, on the real
# MobileNetV2 (../shared) and the demo models; the README's precision table. `make bench` has the speeds.
bench-precision: venv
	$(BIN)/python benchmarks/precision.py

# Every registered method's images/s and its ratio to predict-only, side by side in one run (resnet50, batch 8,
# 3 interleaved rounds; the channel-scoring methods with --max-channels 64 on fewer images); no targets.
bench-methods: venv
	$(BIN)/python benchmarks/throughput.py --only methods --rounds 3

# 12 MP and 48 MP JPEG (and HEIC) photos: camcli against predict-only with full and reduced decode,
# ms per image, MB per overlay, peak RSS, and the targets (resnet50, batch 8).
bench-photos: venv
	$(BIN)/python benchmarks/photos.py

# One 12 MP photo's full-size overlay, stage by stage: Pillow's path against OpenCV's (the `fast` extra), CPU ms,
# and the target (upsample, colour, blend and JPEG encode within 50 ms).
bench-overlay: venv
	$(BIN)/python benchmarks/overlay_speed.py

# --max-channels: the two channel rules against full Score-CAM on the real MobileNetV2 photos.
bench-scorecam: venv
	$(BIN)/python benchmarks/scorecam_channels.py

# Score-CAM's peak RSS at --batch-size 64 against 8 (target: within 1.5x).
bench-scorecam-memory: venv
	$(BIN)/python benchmarks/scorecam_memory.py

# camcli's PNG writer against Pillow's encoder: milliseconds and KiB per overlay, side by side.
bench-png: venv
	$(BIN)/python benchmarks/png_writer.py

# Every method on 600 held-out generated scenes with true boxes: the localization table and targets.
bench-localization: venv
	$(BIN)/python benchmarks/localization.py

# ROAD (issue 32) on 60 held-out generated scenes: the demo model's Grad-CAM against seeded random maps.
bench-road: venv
	$(BIN)/python benchmarks/road_demo.py

# camcli audit: SpRAy's flags on demo-cheat against the planted tag (precision, recall) and on demo,
# the audit's cost on 5,000 maps, and the sanity check on demo and MobileNetV2 (../shared weights).
bench-audit: venv $(CHEAT_VARIANTS)
	$(BIN)/python benchmarks/audit.py

# Weakly supervised segmentation on generated scenes with exact masks: mIoU of gradcam, gradcam++,
# layercam, scorecam and cam seeds under each refinement (threshold chosen on a validation split),
# and each refinement's cost per 224 px image.
bench-segmentation: venv
	$(BIN)/python benchmarks/segmentation.py

# Every detection of a 640 px image explained by a RetinaNet on ResNet-18 (random weights), against its own predict.
bench-detectors: venv
	$(BIN)/python benchmarks/detectors.py

# camcli.keras.ExplainCallback: seconds per call against an epoch of training (demo), and on ResNet50.
bench-callback: venv
	$(BIN)/python benchmarks/callback.py

# camcli.ray.explain_dataset against camcli explain on the same folder, on this machine: images/s.
bench-ray: venv
	$(BIN)/python benchmarks/ray_throughput.py

# 5,000 generated images through the demo model: failures, completeness, memory growth.
soak: venv
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(DEMO_OUT) camcli_out .pytest_cache
