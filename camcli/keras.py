"""Explanations while a model trains: a Keras callback that explains a probe set every few epochs.

    >>> from camcli.keras import ExplainCallback
    >>> probe = ExplainCallback(images, truth_labels=labels, boxes=boxes, preprocess="scale01", layers="conv6",
    ...                         log_dir="logs/explain", stop_below={"pointing": 0.6})
    >>> model.fit(train, epochs=20, callbacks=[probe])
    >>> probe.history[-1].metrics  # {"gradcam/pointing": ..., "gradcam/energy": ..., "accuracy": ...}

At the end of every `every`-th epoch (and the last one) the callback explains its probe images with the
model as it is at that moment, through the same Explainer that `camcli explain` uses, and
- logs to TensorBoard (`log_dir`): each method's overlays as images, with the truth boxes drawn, and
  the pointing game, the energy in the boxes and the probe's accuracy as scalars (`probe/...`), at
  step = epochs completed (a baseline at step 0, before the first epoch, with `at_start`);
- adds the figures to the epoch's `logs` ("probe_gradcam_pointing", ...), so that Keras' History,
  EarlyStopping or ModelCheckpoint placed after it can use them;
- warns (`warn_below`) or stops training (`stop_below`, sets `model.stop_training`) when a figure falls
  below its bound: {"pointing": 0.6} bounds every method's pointing, {"gradcam/energy": 0.3} one.

The model is never changed: the Explainer reads its layers and weights (Keras' own layers live; any
custom stand-in copy is refreshed before each run), calls the layers in inference mode (no BatchNorm
statistics move, no dropout), and touches no optimizer, metric or random state; training with the
callback gives the same weights as training without it (tests/test_keras_callback.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import keras

from camcli.errors import UsageError
from camcli.options import FileOptions, MapRequest, ModelOptions, ProbeOptions, gather


class ProbeWarning(UserWarning):
    """A probe figure fell below its bound (`warn_below`, or `stop_below` as training stops)."""


@dataclass
class ProbeRun:
    """One run of the probe set: at `step` epochs completed (0: before training)."""

    step: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    crossed: list[str] = field(default_factory=list)  # the bounds it fell below, as one-line messages


class ExplainCallback(keras.callbacks.Callback):
    """Explain a probe set with the model being trained, every `every` epochs.

    images: uint8 RGB arrays (height, width, 3), or one (n, height, width, 3) array, of any size.
    truth_labels: each image's true class (index or name), for `classes="truth"` and the accuracy.
    boxes: each image's truth box (x0, y0, x1, y1) in its pixels, or a list of them: for the pointing
    game and the energy in the boxes.
    preprocess, labels: how the model takes images and names its classes (camcli.wrap_model).
    maps (camcli.options.MapRequest): methods, layers, classes, head... as for camcli.Explainer
    (classes="truth" explains each image's label). files: the overlays' alpha and colormap.
    probe (camcli.options.ProbeOptions): every, explain after every N-th epoch (and after the last);
    at_start, also before training; log_dir, the TensorBoard folder (None: log nothing); max_pictures,
    overlays logged per method; warn_below, stop_below, {metric: bound}, metric one of pointing,
    energy, accuracy, or method/metric; pointing_tolerance, batch_size, verbose.
    Any field of these groups may be given as a keyword (`layer` and `method` stand for the plurals).
    """

    def __init__(self, images, *, truth_labels: Sequence | None = None, boxes=None, preprocess: str = "none",
                 labels: Sequence[str] | None = None, maps: MapRequest | None = None, files: FileOptions | None = None,
                 probe: ProbeOptions | None = None, **options):
        super().__init__()
        from camcli.evaluate.probe import TRUTH_CLASS, Probe, check_bounds
        from camcli.explain.explainer import EXPLAINER_ALIASES

        groups = gather("ExplainCallback", {"maps": (MapRequest, maps), "files": (FileOptions, files),
                                            "probe": (ProbeOptions, probe)}, options, aliases=EXPLAINER_ALIASES)
        maps, files, probe = groups["maps"], groups["files"], groups["probe"]
        from camcli.api import refuse_unused

        refuse_unused(files, ("alpha", "colormap"), "does not apply to the callback, which logs overlays to "
                                                    "TensorBoard and writes no files; drop it")
        from camcli.models.loading import check_labels

        ModelOptions(preprocess=preprocess)  # checked now, not when training has begun
        check_labels(labels)
        self.probe = Probe(images, truth_labels, boxes, alpha=files.alpha, colormap=files.colormap,
                           pointing_tolerance=probe.pointing_tolerance, max_pictures=probe.max_pictures)
        self.truth_class = TRUTH_CLASS in maps.classes
        if self.truth_class and maps.classes != (TRUTH_CLASS,):
            raise UsageError('`classes="truth"` explains each image\'s label and goes alone')
        if self.truth_class and truth_labels is None:
            raise UsageError('`classes="truth"` explains each probe image\'s label: give `truth_labels`')
        self.maps = replace(maps, classes=("top1",)) if self.truth_class else maps
        if probe.log_dir is not None:
            from pathlib import Path

            from camcli.api import check_output_folder

            check_output_folder(Path(probe.log_dir))  # an unusable folder fails here, not after the first epoch
        self.warn_below = check_bounds(probe.warn_below, self.probe.available(), "warn_below")
        self.stop_below = check_bounds(probe.stop_below, self.probe.available(), "stop_below")
        self.preprocess, self.labels = preprocess, labels
        self.every, self.at_start, self.log_dir = probe.every, probe.at_start, probe.log_dir
        self.batch_size, self.verbose = probe.batch_size, probe.verbose
        self.history: list[ProbeRun] = []
        self.stopped_at: int | None = None  # the step after which stop_below stopped training
        self._explainer = None
        self._explained_model = None
        self._writer = None

    # -- Keras' hooks --------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.at_start and not self.history:
            self._run(0)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        last = self.params.get("epochs") if self.params else None
        if done % self.every and done != last:
            return
        run = self._run(done)
        if logs is not None:
            logs.update({"probe_" + key.replace("/", "_"): value for key, value in run.metrics.items()})

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # -- the work ------------------------------------------------------------------------------------

    def explainer(self):
        """The Explainer (or MethodSet) on the model being trained, built once for it."""
        if self._explainer is None or self._explained_model is not self.model:
            from camcli.api import build_explainer
            from camcli.models.loading import wrap_model

            loaded = wrap_model(self.model, preprocess=self.preprocess,
                                labels=None if self.labels is None else list(self.labels))
            self._explainer = build_explainer(loaded, self.maps)
            self._explained_model = self.model
        return self._explainer

    def explain_now(self, step: int | None = None) -> ProbeRun:
        """Explain the probe set with the model as it is now, log it (at `step`, default: the runs so far)
        and check the bounds; what the callback does after an epoch."""
        return self._run(len(self.history) if step is None else step)

    def _run(self, step: int) -> ProbeRun:
        explainer = self.explainer()
        explainer.refresh()
        result = self.probe.run(explainer, truth_class=self.truth_class, batch_size=self.batch_size)
        started = time.perf_counter()
        if self.log_dir is not None:
            self._log(step, result)
        run = ProbeRun(step, result.seconds + time.perf_counter() - started, dict(result.metrics))
        self.history.append(run)
        self._check(run)
        return run

    def _log(self, step: int, result) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default(step=step):
            for key, value in result.metrics.items():
                tf.summary.scalar(f"probe/{key}", value)
            for method, count in result.empty_maps.items():
                tf.summary.scalar(f"probe/{method}/empty_maps", count)
            tf.summary.scalar("probe/seconds", result.seconds)
            for tag, pictures in result.overlays.items():
                tf.summary.image(f"probe/{tag}", pictures, max_outputs=len(pictures))
        self._writer.flush()

    def _check(self, run: ProbeRun) -> None:
        from camcli.evaluate.probe import bounded_figures

        # The baseline before training is logged, not judged: a model trained from scratch starts random.
        for bounds, stop in ((self.stop_below, True), (self.warn_below, False)) if run.step > 0 else ():
            for name, bound in bounds.items():
                for key, value in bounded_figures(run.metrics, name):
                    if value < bound:
                        message = (f"probe after epoch {run.step}: {key} {value:.3f} is below {bound:g}"
                                   + ("; training stops (stop_below)" if stop else " (warn_below)"))
                        run.crossed.append(message)
                        if stop and self.model is not None:
                            self.model.stop_training = True
                            self.stopped_at = run.step
        for message in run.crossed:
            warnings.warn(message, ProbeWarning, stacklevel=2)
        if self.verbose:
            figures = ", ".join(f"{key} {value:.3f}" for key, value in run.metrics.items())
            print(f"camcli probe after epoch {run.step}: {figures or 'explained'} ({run.seconds:.2f} s)", flush=True)
