# `make test` and `make demo` work on a fresh machine: they create .venv and install camcli into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_OUT ?= demo_out

.DEFAULT_GOAL := all
.PHONY: all venv lint test demo demo-model samples bench bench-methods bench-localization soak clean

all: lint test

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

venv: $(INSTALLED)

lint: venv
	$(BIN)/ruff check camcli tests benchmarks

test: venv
	$(BIN)/pytest

# The main job on the embedded offline model: overlays, heatmaps and JSON for the sample images.
demo: venv
	$(BIN)/camcli explain sample_images/generated --model demo --class top1 --class top2 --save-heatmap --out $(DEMO_OUT)
	@echo "demo outputs in $(DEMO_OUT)/ (open $(DEMO_OUT)/summary.json)"

# Retrain the embedded demo model (deterministic; a few minutes on 2 cores).
demo-model: venv
	$(BIN)/python -m camcli.demo.train

samples: venv
	$(BIN)/python -m camcli.demo.samples

bench: venv
	$(BIN)/python benchmarks/throughput.py

# Every CAM method's images/s and its ratio to predict-only (resnet50, batch 8); no targets.
bench-methods: venv
	$(BIN)/python benchmarks/throughput.py --only methods

# Every method on 600 held-out generated scenes with true boxes: the localization table and targets.
bench-localization: venv
	$(BIN)/python benchmarks/localization.py

# 5,000 generated images through the demo model: failures, completeness, memory growth.
soak: venv
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(DEMO_OUT) camcli_out .pytest_cache
