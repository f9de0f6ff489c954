"""What camcli.keras.ExplainCallback costs per call, against the epoch it runs after.

1. The demo model (96 px), fine-tuned on the cheating demo's poisoned scenes (as tests/test_keras_callback.py
   does): epochs of training on --train scenes are timed with the callback and without it, in
   interleaved rounds (medians), and the callback's own time per call (explaining the probe, scoring
   it, drawing and logging the overlays to TensorBoard) is read from its history, for probes of 16,
   32 and 64 tagged scenes.
2. ResNet50 (weights=None, 224 px): the callback's time per call on a probe of 16 images, its first call
   (which traces the compiled step) apart from the steady ones, with gradcam alone and with gradcam,
   gradcam++ and layercam.

    python benchmarks/callback.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_rows(train: int, epochs: int, probes, rounds: int) -> list[tuple]:
    import keras

    from camcli.keras import ExplainCallback
    from camcli.models.demo import CLASSES, PREPROCESS
    from camcli.models.demo.cheat import poisoned_dataset, tagged_probe
    from camcli.models.demo.model import load_demo_model

    images, labels, _ = poisoned_dataset(train, seed=0, other_tag_rate=0.5)
    inputs = images.astype("float32") / 255.0

    class EpochClock(keras.callbacks.Callback):
        """Each epoch's wall time from its start to the next one's (the callbacks' work at its end in it)."""

        def __init__(self):
            super().__init__()
            self.starts = []

        def on_epoch_begin(self, epoch, logs=None):
            self.starts.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.starts.append(time.perf_counter())

    def fit(callbacks):
        model = load_demo_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(inputs[:64], labels[:64], batch_size=32, epochs=1, verbose=0)  # trace the train step first
        clock = EpochClock()
        model.fit(inputs, labels, batch_size=32, epochs=epochs, verbose=0, callbacks=[clock, *callbacks])
        return list(np.diff(clock.starts))  # the baseline before the first epoch is not in any of them

    probes = {size: tagged_probe(size, seed=2000) for size in probes}
    epochs_seconds = {None: [], **{size: [] for size in probes}}
    calls, first_calls = {size: [] for size in probes}, {size: [] for size in probes}
    # Interleaved rounds, so that the machine's drift falls on every configuration alike.
    for _ in range(rounds):
        epochs_seconds[None] += fit([])
        for size, (probe_images, probe_labels, probe_boxes) in probes.items():
            with tempfile.TemporaryDirectory() as log_dir:
                callback = ExplainCallback(probe_images, truth_labels=probe_labels, boxes=probe_boxes,
                                           preprocess=PREPROCESS, labels=CLASSES, layer="conv6",
                                           log_dir=log_dir, verbose=False)
                epochs_seconds[size] += fit([callback])
            calls[size] += [run.seconds for run in callback.history[1:]]  # after each epoch
            first_calls[size].append(callback.history[0].seconds)  # the baseline, which traces the step
    plain = statistics.median(epochs_seconds[None])
    rows = [("demo, no callback", train, "-", plain, "-", "-")]
    for size in probes:
        rows.append((f"demo, probe of {size}", train, size, statistics.median(epochs_seconds[size]),
                     statistics.median(calls[size]), max(first_calls[size])))
    return rows


def resnet_rows(size: int, repeats: int) -> list[tuple]:
    from camcli.keras import ExplainCallback
    from camcli.models.loading import load_model

    model = load_model("resnet50", weights="none").model
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8)
    boxes = [(40, 40, 180, 180)] * size
    rows = []
    for methods in (["gradcam"], ["gradcam", "gradcam++", "layercam"]):
        with tempfile.TemporaryDirectory() as log_dir:
            callback = ExplainCallback(images, boxes=boxes, methods=methods, preprocess="caffe", log_dir=log_dir,
                                       verbose=False)
            callback.set_model(model)
            for step in range(repeats + 1):
                callback.explain_now(step)
        calls = [run.seconds for run in callback.history[1:]]
        rows.append((f"resnet50, {'+'.join(methods)}", "-", size, "-", statistics.median(calls),
                     callback.history[0].seconds))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000, help="training scenes per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every run (median)")
    parser.add_argument("--resnet-repeats", type=int, default=3, help="steady calls timed on ResNet50")
    args = parser.parse_args(argv)
    import keras

    keras.utils.set_random_seed(0)
    rows = demo_rows(args.train, args.epochs, (16, 32, 64), args.rounds) + resnet_rows(16, args.resnet_repeats)
    print("| run | training scenes | probe images | s per epoch | callback s per call (steady) | first call s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, train, probe, epoch, call, first in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in (train, probe, epoch, call, first)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    plain = rows[0][3]
    for name, _, _, epoch, call, _ in rows[1:4]:
        print(f"{name}: the callback takes {call:.3f} s per call, {call / plain:.1%} of an epoch of "
              f"{args.train} scenes; the epochs' wall time with it: {epoch / plain - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
