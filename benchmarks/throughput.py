"""Throughput benchmark: camcli end to end against plain prediction and the keras.io tutorial loop.

Measured side by side in one run, on the same generated images (JPEG files at the model's own size).
The modes run interleaved over --rounds rounds, in alternating order (predict, gradcam, cam, then
cam, gradcam, predict, ...), and each ratio is the median over the rounds of the two modes' speeds
in the same round. On a shared 2-core machine whose speed swings by 15% within seconds, a ratio of
neighbouring measurements is steady where each mode's best (or mean) round is not: one fast burst
during one mode's turn would otherwise decide the ratio. The images/s columns are medians too.

  1. predict-only: decode + resize + preprocess + a compiled forward pass, in batches, with decoding
     overlapped in a thread pool: the fastest way to just classify the folder;
  2. camcli end to end: the CLI's own code path (camcli.runs.runner.run) with gradcam, then cam,
     including overlays, PNG and JSON writing;
  3. tutorial loop: the keras.io Grad-CAM example re-implemented faithfully (eager, one image at a
     time): its model.predict for the printed prediction, its make_gradcam_heatmap (which builds
     the gradient model on every call), and its overlay.
It also measures cold start (a fresh `camcli explain` of one image), `camcli --help` and
`camcli models` wall times, and resident memory over a long run.

The methods section (no targets) runs every registered method end to end the same way, on one model
(--methods-model, resnet50) at batch 8, interleaved with predict-only, and prints each method's
images/s, its ratio to predict-only and its cost; Score-CAM runs with --max-channels
(--scorecam-channels, 64) and --aug-smooth gradcam is one extra row. The two slow rows run on fewer
images (--methods-slow-images). A last row runs every one-pass method in one run (`--method a --method
b ...`, which shares one step per batch) against the same methods as separate runs.

The peers section (no targets) puts camcli's Grad-CAM maps next to the keras.io example's and
tf-keras-vis's `Gradcam` (the `bench` extra; skipped, with one line saying why, where it cannot be
imported), maps only, per model, with benchmarks/peers.py's measurement: the same preprocessed images
for every tool, each finding the class as its users do, interleaved rounds, on tf-keras-vis's own
clone of the model (camcli's model is checked unchanged afterwards).

The photos section measures the whole process on 224-512 px photos, where the per-image output work
(overlay, PNG/JPEG encoding, JSON) sets the pace rather than the model: --photos-images copies of
../shared/photos (random crops, mirrored or not, 512 px on the longest side, each in its source's
format), files on disk to outputs written. Predict-only (camcli's decoder, resize, batched compiled
forward, no outputs) against `camcli.explain_paths(folder, methods=[gradcam] / [cam], batch_size=8)`,
each timed as a whole call on the first 8 photos and on all of them: the difference over the extra
photos is the marginal cost per photo, so a call's fixed cost (tracing the step, discovery, thread
pools) cancels out. Targets: gradcam >= 0.85x and cam >= 0.90x predict-only's marginal images/s.

    python benchmarks/throughput.py                 # every section (make bench)
    python benchmarks/throughput.py --quick         # a smaller run to try things
    python benchmarks/throughput.py --only methods  # just the methods section (make bench-methods)
    python benchmarks/throughput.py --only peers    # just the peers, maps only
    python benchmarks/throughput.py --only photos   # just the photos section, with its targets
    python benchmarks/throughput.py --skip-methods  # leave out a section (--skip-peers, --skip-photos too)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from soak import MAX_MEMORY_GROWTH, soak  # noqa: E402

from camcli.models.loading import import_keras  # noqa: E402

TARGETS = {
    "gradcam_vs_predict": 0.85,
    "cam_vs_predict": 0.90,
    # camcli/tutorial is bounded by predict/tutorial (no Grad-CAM beats a bare forward pass), so the
    # target is a share of that ceiling (issue 15, restating issue 3's 10x).
    "tutorial_share_of_ceiling": 0.9,
    "help_seconds": 0.3,
    "memory_growth": MAX_MEMORY_GROWTH,
    # issue 29: the bfloat16 Grad-CAM step against a float32 forward pass, batch 8, maps only (the limit is 2x)
    "bfloat16_step_vs_predict": {"vgg16": 1.85, "resnet50": 1.7, "xception": 1.7},
    "bfloat16_scorecam_vs_float32": 1.7,
    "bfloat16_photos_vs_predict": 1.3,  # whole process, ResNet50, ~512 px photos, marginal images/s
}
PRECISIONS = ("float32", "bfloat16", "float16")
PRECISION_BATCH = 8
SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """Generated scenes (shapes on clutter) saved as JPEG, so decoding costs what it costs for photos."""
    from PIL import Image

    from camcli.models.demo.scenes import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        scene = make_scene(rng, size=(size, size))
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(scene.image).save(path, quality=90)
        paths.append(path)
    return paths


def side_by_side(modes: dict[str, Callable[[], float]], rounds: int) -> tuple[dict, dict]:
    """Run every mode (a callable returning images/s) once per round, in alternating order, so that a
    drift in the machine's speed falls on all of them alike. Returns each mode's median images/s and
    the median over rounds of its images/s divided by the "predict" mode's in the same round."""
    speeds = {name: [] for name in modes}
    names = list(modes)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            speeds[name].append(modes[name]())
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratios = {name: statistics.median(v / p for v, p in zip(values, speeds["predict"]))
              for name, values in speeds.items()}
    return medians, ratios


# -- 1. predict-only ----------------------------------------------------------------------------

def predict_only(loaded, paths: list[Path], batch_size: int) -> float:
    """images/s for decode + resize + preprocess + compiled forward, decoding overlapped."""
    import tensorflow as tf

    from camcli.models.preprocess import preprocess, resize_rgb
    from camcli.runs.decode import load_rgb

    height, width = loaded.input_size
    forward = tf.function(lambda x: loaded.model(x, training=False),
                          input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)])

    def decode(path):
        return preprocess(resize_rgb(load_rgb(path), (height, width)), loaded.preprocess)

    forward(np.zeros((batch_size, height, width, 3), np.float32))  # compile outside the timing
    started = time.perf_counter()
    # As many decoding threads as camcli's runner uses (camcli.runs.runner), so neither is held back.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        decoded = pool.map(decode, paths)
        batch = []
        for x in decoded:
            batch.append(x)
            if len(batch) == batch_size:
                forward(np.stack(batch)).numpy()
                batch = []
        if batch:
            forward(np.stack(batch)).numpy()
    return len(paths) / (time.perf_counter() - started)


# -- 2. camcli end to end -------------------------------------------------------------------------

def compiled_explainer(loaded, method: str, batch_size: int, **maps):
    """An Explainer as the CLI builds it once per run (`maps`: more MapRequest fields), with its step traced
    outside the timing."""
    from camcli.explain.explainer import Explainer

    explainer = Explainer(loaded, method=method, **maps)
    explainer.explain_batch(np.zeros((batch_size, *loaded.input_size, 3), np.float32))
    return explainer


def timed_run(explainer, paths: list[Path], batch_size: int, out: Path) -> float:
    """images/s of the CLI's code path (discover + camcli.runs.runner.run) over the folder of `paths`."""
    from camcli.options import FileOptions, RunOptions
    from camcli.runs.discovery import discover
    from camcli.runs.runner import run

    tasks, _ = discover([paths[0].parent], out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = run(explainer, tasks, RunOptions(out=out, batch_size=batch_size), FileOptions())
    elapsed = time.perf_counter() - started
    assert summary.failed == 0 and summary.ok == len(paths), summary.failures[:3]
    return len(paths) / elapsed


# -- 3. the keras.io tutorial loop ----------------------------------------------------------------

def tutorial_loop(loaded, paths: list[Path], layer: str, out: Path) -> float:
    """The keras.io Grad-CAM example (examples/vision/grad_cam.py), one image at a time, eager.

    Re-implemented from its description, step for step:
    - `get_img_array`: load_img at the model's size, img_to_array, a batch of one;
    - the prediction it prints comes from `model.predict(img_array)`, a separate forward pass;
    - `make_gradcam_heatmap` builds `grad_model = Model(inputs, [conv output, output])` inside the
      function, so on every call; a tape around the call; the gradient of the top class, pooled
      over batch and space; a weighted sum, ReLU and division by the max;
    - `save_and_display_gradcam`: a jet overlay at alpha 0.4, saved as an image.
    The example sets the last activation to None on the user's model; our built-in models already
    output logits, so nothing is modified here.
    """
    import matplotlib
    import tensorflow as tf
    from PIL import Image

    keras = import_keras()
    from camcli.models.preprocess import preprocess

    model = loaded.model
    jet = (matplotlib.colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    height, width = loaded.input_size

    def make_gradcam_heatmap(img_array):
        grad_model = keras.models.Model(model.inputs, [model.get_layer(layer).output, model.output])
        with tf.GradientTape() as tape:
            last_conv_layer_output, preds = grad_model(img_array)
            pred_index = tf.argmax(preds[0])
            class_channel = preds[:, pred_index]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
        heatmap = tf.squeeze(heatmap)
        heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
        return heatmap.numpy()

    def explain_one(i, path):
        image = keras.utils.load_img(path, target_size=(height, width))
        img_array = preprocess(np.expand_dims(keras.utils.img_to_array(image), 0), loaded.preprocess)
        model.predict(img_array, verbose=0)  # the example prints decode_predictions(preds) from this
        heatmap = np.uint8(255 * np.nan_to_num(make_gradcam_heatmap(img_array)))
        original = np.asarray(Image.open(path).convert("RGB"))
        colour = Image.fromarray(jet[heatmap]).resize((original.shape[1], original.shape[0]))
        overlay = (np.asarray(colour) * 0.4 + original).clip(0, 255).astype(np.uint8)
        Image.fromarray(overlay).save(out / f"{i}.jpg")

    # Calling the gradient model on a bare tensor makes Keras warn about the input structure on every
    # image; the example does exactly that, so the call stays and the warning is silenced.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    explain_one(0, paths[0])  # the first eager call pays one-off set-up: not timed
    started = time.perf_counter()
    for i, path in enumerate(paths):
        explain_one(i, path)
    return len(paths) / (time.perf_counter() - started)


# -- 4. every method ------------------------------------------------------------------------------

def layer_channels(model, path: str) -> int:
    from camcli.models.layers import all_layers

    return int(next(info.output_shape[-1] for info in all_layers(model) if info.path == path))


def compiled_explainers(loaded, rows, score_batch: int, batch_size: int) -> tuple[dict, dict]:
    """({label: Explainer compiled outside the timing}, {label: why it does not apply})."""
    from camcli.errors import UsageError
    from camcli.explain.explainer import Explainer

    explainers, skipped = {}, {}
    for label, kwargs, _ in rows:
        try:
            explainer = Explainer(loaded, masked_batch=score_batch, **kwargs)
        except UsageError as error:  # e.g. cam on a model without a GAP -> dense head
            skipped[label] = str(error)
            continue
        # compile outside the timing; Score-CAM on one image (its masked passes are the costly part)
        warm = 1 if kwargs.get("max_channels") else batch_size
        explainer.explain_batch(np.zeros((warm, *loaded.input_size, 3), np.float32))
        explainers[label] = explainer
    return explainers, skipped


def row_cost(method, kwargs: dict, masked: float | None, score_batch: int) -> str:
    """What one row of the methods section costs per image, in words."""
    from camcli.explain.augment import AUGMENTATIONS

    if method.scores_channels:
        copies = "masked" if method.needs_masked_scores else "ablated"
        return (f"1 pass + {masked:.0f} {copies} copies per image (masked_images_scored / images), "
                f"in {masked / score_batch:.1f} passes of {score_batch}")
    if kwargs.get("aug_smooth"):
        return (f"{len(AUGMENTATIONS)} gradient passes per image (the image + "
                f"{len(AUGMENTATIONS) - 1} flipped/zoomed copies)")
    return method.cost


def method_rows(max_channels: int) -> list[tuple[str, dict, bool]]:
    """(label, Explainer keyword arguments, slow) of every registered method, and gradcam --aug-smooth."""
    from camcli.explain.methods import REGISTRY

    rows = []
    for method, entry in REGISTRY.items():
        if entry.scores_channels:
            rows.append((f"{method} --max-channels {max_channels}", {"method": method, "max_channels": max_channels},
                         True))
        else:
            rows.append((method, {"method": method}, False))
    rows.append(("gradcam --aug-smooth", {"method": "gradcam", "aug_smooth": True}, True))
    return rows


def images_per_row(rows, explainers: dict, paths: list[Path], args, folder: Path) -> dict[str, list[Path]]:
    """Each row's images: all of them, or for a slow row the first few, in a folder of their own, as many as
    keep a channel-scoring row's copies (counted on its warm-up image) within --methods-copy-budget."""
    chosen = {}
    for label, _, slow in rows:
        if label not in explainers:
            continue
        count = len(paths)
        if slow:
            count = args.methods_slow_images
            warm_copies = explainers[label].masked_images_scored  # from the one warm-up image
            if warm_copies:
                count = max(1, min(count, args.methods_copy_budget // warm_copies))
        if count == len(paths):
            chosen[label] = paths
            continue
        chosen[label] = [folder / f"first-{count}" / path.name for path in paths[:count]]
        for path, copy in zip(paths, chosen[label]):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
    return chosen


def methods_section(args, work: Path, targets=None) -> None:
    """Every registered method end to end (the CLI's code path), interleaved with predict-only.

    One model, one batch size, the same generated images for every row. The methods that score channels one
    by one (Score-CAM, SS-CAM, IS-CAM, AblationCAM) run with --max-channels --scorecam-channels, each on the
    first images of the set, as many as keep its masked (or ablated) copies within --methods-copy-budget per
    round (at least one, at most --methods-slow-images): SS-CAM's 35 noisy copies per channel would
    otherwise take hours. --aug-smooth uses --methods-slow-images. Medians over rounds, as in the main
    table. The Explainer is built once per row, as the CLI builds it once per run, with the CLI's Score-CAM
    batch (4 x --batch-size masked copies per pass). No targets: it only prints.
    """
    from camcli.explain.explainer import MethodSet
    from camcli.explain.methods import REGISTRY
    from camcli.models.catalog import BUILTIN_MODELS
    from camcli.models.loading import load_model

    name, batch_size = args.methods_model, args.methods_batch_size
    entry = BUILTIN_MODELS[name]
    folder = work / "methods" / "all"
    paths = make_images(folder, args.methods_images, entry.input_size)
    loaded = load_model(name, weights="none")
    score_batch = batch_size * 4  # what `camcli explain --batch-size N` passes (camcli.cli)
    rows = method_rows(args.scorecam_channels)
    explainers, skipped = compiled_explainers(loaded, rows, score_batch, batch_size)
    row_paths = images_per_row(rows, explainers, paths, args, work / "methods")

    masked_per_image = {}

    def method_run(label, explainer, use):
        def measure():
            before = explainer.masked_images_scored
            speed = timed_run(explainer, use, batch_size, work / "methods" / "out")
            masked_per_image[label] = (explainer.masked_images_scored - before) / len(use)
            return speed
        return measure

    modes = {"predict": partial(predict_only, loaded, paths, batch_size)}
    for label in row_paths:
        modes[label] = method_run(label, explainers[label], row_paths[label])
    # `--method a --method b ...` with every one-pass method: one shared step per batch (MethodSet).
    together = [label for label, kwargs, slow in rows if label in explainers and not slow
                and not REGISTRY[kwargs["method"]].guided]
    together_label = f"{len(together)} methods in one run"
    modes[together_label] = partial(timed_run, MethodSet([explainers[label] for label in together]), paths,
                                    batch_size, work / "methods" / "out")
    best, relative = side_by_side(modes, args.rounds)

    predict = best["predict"]
    print(f"methods: {name} at batch {batch_size}, every registered method end to end (the CLI's code path),")
    print(f"interleaved with predict-only ({predict:.1f} images/s on the {len(paths)} images), medians of "
          f"{args.rounds} rounds; relative = method images/s / predict-only images/s in the same round")
    print(f"  {'method':<28} {'images':>6} {'images/s':>9} {'relative':>9}  cost")
    for label, kwargs, _ in rows:
        if label in skipped:
            print(f"  {label:<28} {'':>6} {'n/a':>9} {'n/a':>9}  {skipped[label]}")
            continue
        cost = row_cost(REGISTRY[kwargs["method"]], kwargs, masked_per_image.get(label), score_batch)
        images = len(row_paths[label])
        print(f"  {label:<28} {images:>6} {best[label]:9.2f} {relative[label]:8.2f}x  {cost}")
    separate = 1.0 / sum(1.0 / best[label] for label in together)
    print(f"  {together_label:<28} {len(paths):>6} {best[together_label]:9.2f} {relative[together_label]:8.2f}x  "
          f"--method {' --method '.join(together)}: one shared step per batch; the same methods as "
          f"{len(together)} separate runs: {separate:.2f} images/s, so one run is "
          f"{best[together_label] / separate:.1f}x faster")
    scorecam = next((e for label, e in explainers.items() if e.method.name == "scorecam"), None)
    if scorecam is not None:
        channels = layer_channels(loaded.model, scorecam.layers[0])
        print(f"  scorecam on all {channels} channels of {scorecam.layer} (computed, not measured): "
              f"{channels} masked copies = {channels} / {score_batch} = {channels / score_batch:.0f} "
              f"forward passes of {score_batch} per image, {channels / min(channels, args.scorecam_channels):.0f}x "
              f"the masked work of the --max-channels {args.scorecam_channels} row")
    del explainers, loaded


# -- 5. peers, maps only --------------------------------------------------------------------------

def tf_keras_vis_missing() -> str | None:
    """Why tf-keras-vis's Grad-CAM cannot be used here, or None when it can."""
    try:
        from tf_keras_vis.gradcam import Gradcam  # noqa: F401
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: F401
        from tf_keras_vis.utils.scores import CategoricalScore  # noqa: F401
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return None


def peers_section(args, work: Path, targets=None) -> None:
    """camcli's Grad-CAM maps against the keras.io example's and tf-keras-vis's, side by side, per model
    (benchmarks/peers.py measures; no targets). camcli's model must come out unchanged."""
    import peers

    missing = tf_keras_vis_missing()
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")  # as in tutorial_loop
    print(f"peers, Grad-CAM maps only (no decoding, no files): the same {args.peer_images} preprocessed images for "
          f"every tool, {args.rounds} interleaved rounds, weights=None; each tool finds the class as its users do:")
    print(f"  camcli: Explainer.explain_batch, {peers.BATCH} a batch (predicts and maps in one compiled step); "
          "keras.io: model.predict, then make_gradcam_heatmap, one image at a time;")
    print("  tf-keras-vis: model.predict and argmax, then Gradcam(model, model_modifier=ReplaceToLinear(), "
          f"clone=True) with a CategoricalScore of those classes, penultimate_layer = camcli's layer, {peers.BATCH} "
          "a call")
    if missing:
        print(f"  tf-keras-vis peer skipped: it cannot be imported ({missing}); pip install tf-keras-vis")
    print(f"  {'model':<10} {'camcli':>8} {'keras.io':>9} {'tf-keras-vis':>13} {'camcli/keras.io':>16} "
          f"{'camcli/tf-keras-vis':>20}   (images/s; ratio: median of the rounds' ratios)")
    for name in args.models.split(","):
        result = peers.measure(name, args.peer_images, args.rounds)
        if not result["unchanged"]:
            raise SystemExit(f"peers: {name}'s model changed while the peers ran: camcli's model must stay unchanged")
        speed = {tool: result["count"] / statistics.median(times) for tool, times in result["seconds"].items()}
        over = {tool: peers.speed_over(result["seconds"], tool) for tool in ("keras.io", "tf-keras-vis")}
        tkv = (f"{speed['tf-keras-vis']:13.2f}", f"{over['tf-keras-vis']:19.1f}x") if "tf-keras-vis" in speed \
            else (f"{'skipped':>13}", f"{'n/a':>20}")
        print(f"  {name:<10} {speed['camcli']:8.2f} {speed['keras.io']:9.2f} {tkv[0]} {over['keras.io']:15.1f}x "
              f"{tkv[1]}")
    print("  camcli's model was unchanged after every peer ran (its last weights and activation compared)")


# -- 6. photos, the whole process ---------------------------------------------------------------------

PHOTO_SIDE = 512  # the longest side of the photos section's copies
PHOTO_BATCH = 8


def photo_sources() -> list:
    """(picture, suffix) of each photo in ../shared/photos, in its own mode and format; generated
    samples (PNG) where that folder is missing."""
    from PIL import Image

    shared = REPO.parent / "shared" / "photos"
    paths = sorted(p for p in shared.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if paths:
        return [(Image.open(p), p.suffix.lower()) for p in paths]
    from photos import _sources

    return [(picture, ".png") for picture in _sources()]


def make_photo_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` varied copies of the source photos in `folder`: a random crop of 70-100% of each side,
    mirrored or not, resized to PHOTO_SIDE on the longest side, saved in the source's format."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = photo_sources()
    for i in range(count):
        picture, suffix = sources[i % len(sources)]
        width, height = picture.size
        crop_w, crop_h = int(width * rng.uniform(0.7, 1.0)), int(height * rng.uniform(0.7, 1.0))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        copy = picture.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            copy = ImageOps.mirror(copy)
        scale = PHOTO_SIDE / max(crop_w, crop_h)
        copy = copy.resize((round(crop_w * scale), round(crop_h * scale)), Image.Resampling.LANCZOS)
        options = {"quality": 90} if suffix in (".jpg", ".jpeg") else {}
        copy.save(folder / f"photo_{i:03d}{suffix}", **options)
    return folder


class Marginal:
    """One mode of the photos section: `seconds(folder)` times one whole call on a folder; each
    measurement calls it on the small folder and on the full one, and the difference over the photos
    between them is the marginal cost per photo, so that a call's fixed cost cancels out."""

    def __init__(self, seconds: Callable[[Path], float], small: Path, full: Path):
        self.seconds, self.small, self.full = seconds, small, full
        self.small_count = len(list(small.iterdir()))
        self.extra = len(list(full.iterdir())) - self.small_count
        self.fixed = []  # seconds per call beyond the marginal cost of its photos

    def warm(self) -> None:
        self.seconds(self.small)  # the first call in the process pays one-off costs: not measured

    def __call__(self) -> float:
        short, long = self.seconds(self.small), self.seconds(self.full)
        if long <= short:
            raise SystemExit(f"photos: {self.small_count + self.extra} photos took no longer than {self.small_count}: "
                             "the machine is too noisy for this many photos (raise --photos-images)")
        per_photo = (long - short) / self.extra
        self.fixed.append(short - self.small_count * per_photo)
        return 1.0 / per_photo


def predict_seconds(loaded, folder: Path) -> float:
    """Seconds of predict-only over `folder`: camcli's decoder, resize, batched compiled forward, no outputs.
    Tracing its forward pass is left out of the timing: a fixed cost, which would only add noise."""
    paths = sorted(folder.iterdir())
    return len(paths) / predict_only(loaded, paths, PHOTO_BATCH)


def explain_seconds(loaded, method: str, out: Path, folder: Path, precision: str = "float32") -> float:
    """Seconds of one `camcli.explain_paths` call over `folder`, outputs written as by default."""
    import camcli

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = camcli.explain_paths([folder], model=loaded, out=out, methods=[method], batch_size=PHOTO_BATCH,
                                   precision=precision)
    seconds = time.perf_counter() - started
    expected = len(list(folder.iterdir()))
    assert summary.failed == 0 and summary.ok == expected, (summary.ok, summary.failures[:3])
    return seconds


def photo_folders(work: Path, count: int) -> tuple[Path, Path]:
    """(the first PHOTO_BATCH photos, all `count`), made once."""
    full = make_photo_folder(work / "photos" / "all", count)
    small = work / "photos" / "small"
    small.mkdir(parents=True, exist_ok=True)
    for path in sorted(full.iterdir())[:PHOTO_BATCH]:
        shutil.copyfile(path, small / path.name)
    return small, full


def photos_section(args, work: Path, targets) -> None:
    """Whole process on the photos, per model: predict-only against explain_paths with gradcam and cam
    (cam where the model has a GAP -> dense head), marginal images/s, interleaved rounds, targets."""
    from camcli.models.catalog import BUILTIN_MODELS
    from camcli.models.loading import load_model

    if args.photos_images <= PHOTO_BATCH:
        raise SystemExit(f"--photos-images must be more than {PHOTO_BATCH} (the small folder)")
    from PIL import Image

    small, full = photo_folders(work, args.photos_images)
    formats = ", ".join(f"{sum(p.suffix == s for p in full.iterdir())} {s[1:].upper()}"
                        for s in sorted({p.suffix for p in full.iterdir()}))
    shortest = PHOTO_SIDE
    for path in full.iterdir():
        with Image.open(path) as picture:
            shortest = min(shortest, *picture.size)
    print(f"photos, the whole process (files on disk -> decode -> model -> outputs written): {args.photos_images} "
          f"copies of ../shared/photos ({formats}; random crops, {shortest}-{PHOTO_SIDE} px sides), batch "
          f"{PHOTO_BATCH}, weights=None")
    print(f"  predict-only: camcli's decoder, resize, compiled forward, no outputs; gradcam/cam: camcli.explain_paths "
          f"with default outputs. Each call is timed on {PHOTO_BATCH} and on {args.photos_images} photos: marginal "
          f"images/s = {args.photos_images - PHOTO_BATCH} / the difference;")
    print(f"  'fixed' is a call's cost beyond its photos (trace, discovery, pools). Medians of {args.rounds} "
          "interleaved rounds; ratio: median of the rounds' ratios to predict-only")
    print(f"  {'model':<10} {'predict':>8} {'gradcam':>8} {'cam':>8} {'grad/pred':>10} {'cam/pred':>9}   fixed s "
          "(predict, gradcam, cam)")
    checks = []
    for name in args.models.split(","):
        loaded = load_model(name, weights="none")
        modes = {"predict": Marginal(partial(predict_seconds, loaded), small, full)}
        for method in ("gradcam", "cam") if BUILTIN_MODELS[name].cam else ("gradcam",):
            modes[method] = Marginal(partial(explain_seconds, loaded, method, work / "photos" / "out"), small, full)
        for mode in modes.values():
            mode.warm()
        speeds, ratios = side_by_side(modes, args.rounds)
        cam = (f"{speeds['cam']:8.1f}", f"{ratios['cam']:9.2f}") if "cam" in modes else (f"{'n/a':>8}", f"{'n/a':>9}")
        fixed = ", ".join(f"{statistics.median(mode.fixed):.1f}" for mode in modes.values())
        print(f"  {name:<10} {speeds['predict']:8.1f} {speeds['gradcam']:8.1f} {cam[0]} {ratios['gradcam']:10.2f} "
              f"{cam[1]}   {fixed}")
        checks += [(name, method, ratios[method]) for method in modes if method != "predict"]
        del loaded, modes
    print("  targets, marginal images/s over predict-only's:")
    for name, method, ratio in checks:
        print(f"  {name:<10} {method + '/predict':<16} {targets.check(ratio, TARGETS[f'{method}_vs_predict'])}")


# -- precision (issue 29) -----------------------------------------------------------------------------

def forward_speed(forward, batch: np.ndarray, repeats: int) -> float:
    """images/s of `forward(batch)` (its outputs read back as numpy), `repeats` batches in a row."""
    started = time.perf_counter()
    for _ in range(repeats):
        forward(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def precision_steps(args, loaded, targets) -> None:
    """Maps only, one process: a compiled float32 forward pass against the Grad-CAM step in each precision."""
    import tensorflow as tf

    height, width = loaded.input_size
    batch = np.random.default_rng(0).uniform(-1, 1, (PRECISION_BATCH, height, width, 3)).astype(np.float32)
    model = loaded.model
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)])
    forward(batch)
    modes = {"predict": partial(forward_speed, lambda x: forward(x).numpy(), batch, args.precision_repeats)}
    ids = np.full((PRECISION_BATCH, 1), -1, np.int32)
    for precision in PRECISIONS:
        step = compiled_explainer(loaded, "gradcam", PRECISION_BATCH, precision=precision).step
        modes[precision] = partial(forward_speed, lambda x, step=step: step.run(x, ids), batch, args.precision_repeats)
    speeds, ratios = side_by_side(modes, args.rounds)
    print(f"  {loaded.name:<10} {speeds['predict']:8.1f} " + " ".join(f"{speeds[p]:9.1f}" for p in PRECISIONS)
          + " " + " ".join(f"{ratios[p]:9.2f}" for p in PRECISIONS) + "   bfloat16 step/predict "
          + targets.check(ratios["bfloat16"], TARGETS["bfloat16_step_vs_predict"][loaded.name]))


def precision_runs(args, name: str, loaded, work: Path, targets) -> None:
    """End to end (camcli.runs.runner.run, outputs written) on model-size JPEGs: predict-only float32, and
    gradcam, cam and scorecam (--max-channels) in each precision, side by side."""
    from camcli.models.catalog import BUILTIN_MODELS

    entry = BUILTIN_MODELS[name]
    paths = make_images(work / f"precision-{name}", args.precision_images, entry.input_size)
    slow = make_images(work / f"precision-{name}-scorecam", args.precision_slow_images, entry.input_size)
    methods = ["gradcam", *(["cam"] if entry.cam else []), "scorecam"]
    rows = {}
    for method in methods:
        use, maps = (slow, {"max_channels": args.scorecam_channels}) if method == "scorecam" else (paths, {})
        modes = {"predict": partial(predict_only, loaded, use, PRECISION_BATCH)}
        for precision in PRECISIONS:
            explainer = compiled_explainer(loaded, method, PRECISION_BATCH, precision=precision, **maps)
            modes[precision] = partial(timed_run, explainer, use, PRECISION_BATCH, work / "out")
        rows[method] = side_by_side(modes, args.rounds)
    for method, (speeds, ratios) in rows.items():
        label = f"{method} ({args.scorecam_channels} ch)" if method == "scorecam" else method
        print(f"  {name:<10} {label:<16} {speeds['predict']:8.1f} " + " ".join(f"{speeds[p]:9.2f}" for p in PRECISIONS)
              + " " + " ".join(f"{ratios[p]:9.2f}" for p in PRECISIONS))
    _, ratios = rows["scorecam"]
    print(f"  {name:<10} scorecam bfloat16 / its own float32: "
          + targets.check(ratios["bfloat16"] / ratios["float32"], TARGETS["bfloat16_scorecam_vs_float32"]))


def precision_section(args, work: Path, targets) -> None:
    """The precision column (issue 29): maps-only steps, end-to-end methods per precision, whole-process photos."""
    import tensorflow as tf

    from camcli.models.loading import load_model
    from camcli.models.precision import PrecisionWarning, hardware_warning

    warnings.simplefilter("ignore", PrecisionWarning)  # printed once below, as a note
    tf.get_logger().setLevel("ERROR")  # a Step per mode: TensorFlow counts their traces together and warns
    notes = [note for note in (hardware_warning(p) for p in PRECISIONS) if note]
    print(f"precision, batch {PRECISION_BATCH}, weights=None; medians of {args.rounds} interleaved rounds"
          + "".join(f"\n  note: {note}" for note in notes))
    print(f"  maps only, in one process: a compiled float32 forward pass against camcli's Grad-CAM step "
          f"({args.precision_repeats} batches per measurement); images/s, then each step's ratio to predict")
    print(f"  {'model':<10} {'predict':>8} " + " ".join(f"{p:>9}" for p in PRECISIONS) + " "
          + " ".join(f"{SHORT[p] + '/pr':>9}" for p in PRECISIONS))
    models = args.models.split(",")
    for name in models:
        precision_steps(args, load_model(name, weights="none"), targets)
    print(f"  end to end (camcli.runs.runner.run: decode, step, overlays, JSON) on {args.precision_images} "
          f"model-size JPEGs ({args.precision_slow_images} for scorecam); images/s, then ratio to float32 predict-only")
    print(f"  {'model':<10} {'method':<16} {'predict':>8} " + " ".join(f"{p:>9}" for p in PRECISIONS) + " "
          + " ".join(f"{SHORT[p] + '/pr':>9}" for p in PRECISIONS))
    for name in models:
        precision_runs(args, name, load_model(name, weights="none"), work, targets)
    if "resnet50" in models:
        small, full = photo_folders(work, args.photos_images)
        loaded = load_model("resnet50", weights="none")
        modes = {"predict": Marginal(partial(predict_seconds, loaded), small, full)}
        for precision in PRECISIONS[:2]:
            modes[precision] = Marginal(partial(explain_seconds, loaded, "gradcam", work / "photos" / "out",
                                                precision=precision), small, full)
        for mode in modes.values():
            mode.warm()
        speeds, ratios = side_by_side(modes, args.rounds)
        print(f"  whole process, resnet50, {args.photos_images} ~512 px photos, marginal images/s: predict "
              f"{speeds['predict']:.1f}, gradcam float32 {speeds['float32']:.1f} ({ratios['float32']:.2f}x), "
              f"bfloat16 {speeds['bfloat16']:.1f}")
        print("  resnet50 camcli explain --precision bfloat16 / float32 predict-only: "
              + targets.check(ratios["bfloat16"], TARGETS["bfloat16_photos_vs_predict"]))


# -- process-level figures ----------------------------------------------------------------------

def wall(command: list[str], repeat: int = 3) -> float:
    """Best-of wall time of a command, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def camcli_command() -> list[str]:
    return [sys.executable, "-m", "camcli"]


def cold_start(model: str, image: Path, out: Path) -> float:
    """Seconds for a fresh process to explain one image: import, model build, compile, one image."""
    return wall([*camcli_command(), "explain", str(image), "--model", model, "--weights", "none",
                 "--quiet", "--out", str(out)], repeat=1)


def memory_run(count: int, work: Path) -> tuple[float, float, float]:
    """RSS (MB) after 100 images and at the end of a `count`-image demo-model run, and the growth."""
    figures = soak(count, work / "memory")
    return figures["rss_at_100"], figures["rss_end"], figures["growth"]


# -- the table ------------------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg16,resnet50,xception")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--images", type=int, default=96, help="images per measurement (default 96)")
    parser.add_argument("--tutorial-images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds per measurement; medians are reported (default 5)")
    parser.add_argument("--memory-images", type=int, default=None,
                        help="images in the memory run (default 2000; 500 with --quick; 0 skips it)")
    parser.add_argument("--quick", action="store_true",
                        help="resnet50 only, batch 8, 32 images, 500 for memory; methods: 16 images, 4 slow; "
                             "peers: 8 images; photos: 24")
    parser.add_argument("--only", choices=list(SECTIONS),
                        help="run only this section (only the photos section has targets)")
    for section in SECTIONS:
        parser.add_argument(f"--skip-{section}", action="store_true", help=f"leave out the {section} section")
    parser.add_argument("--peer-images", type=int, default=None,
                        help="images per round in the peers section (default 16; 8 with --quick)")
    parser.add_argument("--photos-images", type=int, default=None,
                        help=f"photos in the photos section, more than {PHOTO_BATCH} (default 48; 24 with --quick)")
    parser.add_argument("--methods-model", default="resnet50", help="model of the methods section (default resnet50)")
    parser.add_argument("--methods-batch-size", type=int, default=8, help="batch size of the methods section")
    parser.add_argument("--methods-images", type=int, default=None,
                        help="images per method row (default 48; 16 with --quick)")
    parser.add_argument("--methods-slow-images", type=int, default=None,
                        help="images for the channel-scoring and --aug-smooth rows, at most (default 8; 4 with "
                             "--quick)")
    parser.add_argument("--methods-copy-budget", type=int, default=600,
                        help="masked or ablated copies per channel-scoring row and round (default 600; at least one "
                             "image each)")
    parser.add_argument("--precision-repeats", type=int, default=6,
                        help="precision section: batches per maps-only measurement (default 6)")
    parser.add_argument("--precision-images", type=int, default=None,
                        help="precision section: images per end-to-end measurement (default 32, quick 16)")
    parser.add_argument("--precision-slow-images", type=int, default=None,
                        help="precision section: images per scorecam measurement (default 8, quick 4)")
    parser.add_argument("--scorecam-channels", type=int, default=64,
                        help="--max-channels of the channel-scoring methods in the methods section (default 64)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch_sizes, args.images, args.tutorial_images = "resnet50", "8", 32, 8
    defaults = {"memory_images": (2000, 500), "methods_images": (48, 16), "methods_slow_images": (8, 4),
                "peer_images": (16, 8), "photos_images": (48, 24), "precision_images": (32, 16),
                "precision_slow_images": (8, 4)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.methods_slow_images = min(args.methods_slow_images, args.methods_images)
    if args.only and getattr(args, f"skip_{args.only}"):
        parser.error(f"--only {args.only} and --skip-{args.only} exclude each other")
    return args


class Targets:
    """Checks figures against their targets and remembers which held."""

    def __init__(self):
        self.held = []

    def check(self, value, target, higher_is_better=True):
        ok = value >= target if higher_is_better else value <= target
        self.held.append(ok)
        sign = ">=" if higher_is_better else "<="
        return f"{value:.2f} (target {sign} {target}: {'held' if ok else 'MISSED'})"


def measure_models(args, work):
    """One row per (model, batch size): predict-only, gradcam and cam images/s, side by side."""
    from camcli.models.catalog import BUILTIN_MODELS
    from camcli.models.loading import load_model

    rows = []
    for name in args.models.split(","):
        entry = BUILTIN_MODELS[name]
        paths = make_images(work / name, args.images, entry.input_size)
        loaded = load_model(name, weights="none")
        tutorial = tutorial_loop(loaded, paths[: args.tutorial_images], entry.default_layer, work / "tutorial")
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            modes = {"predict": partial(predict_only, loaded, paths, batch_size)}
            for method in ("gradcam", "cam") if entry.cam else ("gradcam",):
                modes[method] = partial(timed_run, compiled_explainer(loaded, method, batch_size), paths, batch_size,
                                        work / "out")
            speeds, ratios = side_by_side(modes, args.rounds)
            nan = float("nan")
            rows.append((name, batch_size, speeds["predict"], speeds["gradcam"], speeds.get("cam", nan),
                         ratios["gradcam"], ratios.get("cam", nan), tutorial))
        del loaded
    return rows


def print_table(rows, targets):
    header = f"{'model':<10} {'batch':>5} {'predict':>8} {'gradcam':>8} {'cam':>8} {'grad/pred':>10} {'cam/pred':>9}"
    print(header)
    for name, batch_size, predict, gradcam, cam, grad_ratio, cam_ratio, _ in rows:
        cam_text = f"{cam_ratio:9.2f}" if cam_ratio == cam_ratio else f"{'n/a':>9}"
        print(f"{name:<10} {batch_size:>5} {predict:8.1f} {gradcam:8.1f} {cam:8.1f} {grad_ratio:10.2f} {cam_text}")
    print()
    print("tutorial loop (keras.io Grad-CAM example, eager, one image at a time). No Grad-CAM beats a bare")
    print("forward pass, so camcli/tutorial is bounded by predict/tutorial; the target is their quotient")
    print(f">= {TARGETS['tutorial_share_of_ceiling']} (camcli gradcam and predict-only at their fastest batch sizes):")
    for name in dict.fromkeys(row[0] for row in rows):
        tutorial = next(row[-1] for row in rows if row[0] == name)
        camcli_over = max(row[3] for row in rows if row[0] == name) / tutorial
        predict_over = max(row[2] for row in rows if row[0] == name) / tutorial
        quotient = targets.check(camcli_over / predict_over, TARGETS["tutorial_share_of_ceiling"])
        print(f"  {name:<10} tutorial {tutorial:6.2f} images/s: camcli/tutorial {camcli_over:5.1f}, "
              f"predict/tutorial {predict_over:5.1f}, quotient {quotient}")
    print()
    print("targets at batch 8 and 32:")
    for name, batch_size, _, _, _, grad_ratio, cam_ratio, _ in rows:
        if batch_size not in (8, 32):
            continue
        print(f"  {name:<10} batch {batch_size:>2}: gradcam/predict "
              f"{targets.check(grad_ratio, TARGETS['gradcam_vs_predict'])}")
        if cam_ratio == cam_ratio:
            print(f"  {name:<10} batch {batch_size:>2}: cam/predict     "
                  f"{targets.check(cam_ratio, TARGETS['cam_vs_predict'])}")
    print()


def print_start_and_memory(args, work, targets):
    sample = make_images(work / "single", 1, 224)[0]
    print(f"cold start, resnet50, one image (import + build + compile + explain): "
          f"{cold_start('resnet50', sample, work / 'cold'):.1f} s")
    print(f"camcli --help: {targets.check(wall([*camcli_command(), '--help']), TARGETS['help_seconds'], False)} s")
    print(f"camcli models: {targets.check(wall([*camcli_command(), 'models']), TARGETS['help_seconds'], False)} s")
    if args.memory_images:
        at100, end, growth = memory_run(args.memory_images, work)
        print(f"memory, {args.memory_images}-image demo-model run: RSS {at100:.0f} MB after 100 images, "
              f"{end:.0f} MB at the end: growth {targets.check(growth, TARGETS['memory_growth'], False)}")


# The sections after the main table, in the order they run; each takes (args, work folder, Targets).
SECTIONS = {"peers": peers_section, "methods": methods_section, "photos": photos_section,
            "precision": precision_section}


def main():
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="camcli-bench-"))
    targets = Targets()
    if args.only:
        print(f"camcli throughput benchmark, {args.only} section only: {os.cpu_count()} cores\n")
        SECTIONS[args.only](args, work, targets)
    else:
        print(f"camcli throughput benchmark: {os.cpu_count()} cores, images per measurement {args.images}")
        print("images/s; ratios are camcli end to end over predict-only (or over the tutorial loop)\n")
        print_table(measure_models(args, work), targets)
        for name, section in SECTIONS.items():
            if not getattr(args, f"skip_{name}"):
                section(args, work, targets)
                print()
        print_start_and_memory(args, work, targets)
        print(f"peak RSS of this benchmark process: {peak_rss_mb():.0f} MB")
    shutil.rmtree(work, ignore_errors=True)
    if not targets.held:
        print(f"\nthe {args.only} section has no targets")
        return 0
    print(f"\n{sum(targets.held)} of {len(targets.held)} targets held")
    return 0 if all(targets.held) else 1


if __name__ == "__main__":
    sys.exit(main())
