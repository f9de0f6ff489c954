"""KerasHub image classifiers, object detectors and segmenters: `hub:PRESET`, through the `from_preset` of
its task base (`keras_hub.models.ImageClassifier`, `ObjectDetector`, `ImageSegmenter`), which a preset's
name or its task.json says. A detector also gets its DetectorHead (camcli.models.detectors).

PRESET is a KerasHub preset name (`resnet_50_imagenet`), a `kaggle://` or `hf://` handle, or a local
folder that `classifier.save_to_preset(folder)` wrote. Named presets come from KerasHub's own caches:
kagglehub's ($KAGGLEHUB_CACHE, else ~/.cache/kagglehub) for names and `kaggle://` handles, Hugging
Face's (huggingface_hub's HF_HUB_CACHE) for `hf://`. A preset that is not there and cannot be
downloaded is one `WeightsUnavailableError` that names the folder to fill.

The classifier is a Functional model whose backbone is a nested Functional model, usually with a
(None, None, 3) input: the input size comes from the preset's image converter, and so does the
preprocessing (its `x * scale + offset`, as an "affine" mode). KerasHub's preprocessor runs in the
data pipeline, never inside the model, so camcli applies the same arithmetic before the model, as it
does for every model. Unlike the converter, camcli squashes the image to the input size rather than
cropping it to the aspect ratio first, so that the map covers the whole image.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
from dataclasses import dataclass, replace

from camcli.errors import ModelLoadError, UsageError, WeightsUnavailableError, one_line
from camcli.models import catalog
from camcli.models.loading import LoadedModel, _offline, imagenet_labels, index_labels, read_labels
from camcli.models.preprocess import affine_mode, check_mode

INSTALL_HINT = 'pip install "keras-camcli[hub]"'
# The KerasHub task bases camcli loads, in the order a preset of unknown kind is tried: each preset is
# loaded through its own (a detector through ObjectDetector.from_preset...).
TASK_BASES = ("ImageClassifier", "ObjectDetector", "ImageSegmenter")
TASK_FILE = "task.json"  # what save_to_preset writes for a task: its class, whose base says the kind
KAGGLE_SCHEME, HF_SCHEME = "kaggle://", "hf://"
_IMAGENET_CLASSES = 1000
# PASCAL VOC's 21 segmentation classes, background first (the order of its SegmentationClass masks): the
# labels of a 21-class segmenter whose preset names the dataset (deeplab_v3_plus_resnet50_pascalvoc). KerasHub's
# presets store no class names; other segmenters' classes are their indices unless `labels_file` names them.
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# A segmenter with one sigmoid channel (BASNet's saliency): class 0 is its negated logit, class 1 the logit.
BINARY_CLASSES = ("background", "foreground")
BASNET_OUTPUT = "refine_out"  # the backbone output BASNetImageSegmenter returns: the refinement module's sigmoid


def import_keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ModelLoadError(f"KerasHub is not installed ({one_line(error)}); {INSTALL_HINT}") from error
    return keras_hub


def kagglehub_cache_dir() -> str:
    """Where kagglehub keeps downloads: $KAGGLEHUB_CACHE, else ~/.cache/kagglehub (kagglehub.config's rule)."""
    return os.environ.get("KAGGLEHUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kagglehub")


def hf_cache_dir() -> str:
    """Where huggingface_hub keeps downloads ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


@dataclass(frozen=True)
class PresetSource:
    """Where a preset comes from. `cache` is the folder it is downloaded into (None for a local folder or
    another scheme); `cached` whether its config is already there; `cache_env` the variable that moves it."""

    preset: str  # what from_preset is given
    cache: str | None = None
    cached: bool = False
    cache_env: str = ""
    task: str | None = None  # the KerasHub task base (TASK_BASES) when known before loading
    task_file: str | None = None  # the preset's task.json, where it is on disk

    def unavailable(self, name: str, reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"{name}: KerasHub preset not in its cache at {self.cache} and could not be downloaded ({reason}); "
            f"download it once with network access, or copy the preset's files there ({self.cache_env} moves "
            f"that cache), or pass a local preset folder, hub:FOLDER (what classifier.save_to_preset(FOLDER) writes)"
        )


def _kaggle_source(handle: str) -> PresetSource:
    """kaggle://owner/model/framework/variation[/version] lives in {cache}/models/owner/.../variation/version.
    An unversioned handle asks Kaggle for its latest version first, so it never counts as cached."""
    parts = handle.removeprefix(KAGGLE_SCHEME).strip("/").split("/")
    folder = os.path.join(kagglehub_cache_dir(), "models", *parts)
    cached = len(parts) == 5 and os.path.isfile(os.path.join(folder, "config.json"))
    return PresetSource(handle, folder, cached, "KAGGLEHUB_CACHE", task_file=os.path.join(folder, TASK_FILE))


def _hf_source(handle: str) -> PresetSource:
    from huggingface_hub import try_to_load_from_cache

    repo = handle.removeprefix(HF_SCHEME).strip("/")
    folder = os.path.join(hf_cache_dir(), "models--" + repo.replace("/", "--"))
    cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    task_file = try_to_load_from_cache(repo, TASK_FILE)
    return PresetSource(handle, folder, cached, "HF_HUB_CACHE", task_file=task_file if isinstance(task_file, str)
                        else None)


def preset_source(keras_hub, preset: str) -> PresetSource:
    """A local folder, a kaggle:// or hf:// handle, a KerasHub classifier or detector preset name, or another
    scheme."""
    if os.path.isdir(preset):
        return PresetSource(preset, task_file=os.path.join(preset, TASK_FILE))
    if preset.startswith(KAGGLE_SCHEME):
        return _kaggle_source(preset)
    if preset.startswith(HF_SCHEME):
        return _hf_source(preset)
    if "://" in preset:  # gs://, modelscope://...: KerasHub's own business
        return PresetSource(preset)
    names = []
    for base in TASK_BASES:
        presets = getattr(keras_hub.models, base).presets
        if preset in presets:
            source = _kaggle_source(presets[preset]["kaggle_handle"])
            return replace(source, task=base)
        names += list(presets)
    close = difflib.get_close_matches(preset, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(
        f"{catalog.HUB_PREFIX}{preset}: no such folder, and not a KerasHub image classifier or object detector "
        f"preset; {hint}give a name from keras_hub.models.ImageClassifier.presets (or ObjectDetector.presets), a "
        f"kaggle:// or hf:// handle, or a preset folder"
    )


def preset_task(keras_hub, source: PresetSource) -> str:
    """The task base of a preset (TASK_BASES): known from its name, else read from the class its task.json
    names where that file is on disk; an image classifier otherwise (the preset then loads as one or says why)."""
    if source.task is not None:
        return source.task
    try:
        with open(source.task_file or "", encoding="utf-8") as file:
            class_name = json.load(file).get("class_name")
    except (OSError, ValueError, AttributeError):
        return TASK_BASES[0]
    task_class = getattr(keras_hub.models, str(class_name), None)
    for base in TASK_BASES:
        if isinstance(task_class, type) and issubclass(task_class, getattr(keras_hub.models, base)):
            return base
    return TASK_BASES[0]


@contextlib.contextmanager
def _downloads_quiet():
    """Keep huggingface_hub's and kagglehub's retry and progress log lines out of the output (the error
    that follows says what failed); tqdm's download bars are not logging and still show."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "kagglehub")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _from_preset(keras_hub, source: PresetSource, name: str, task: str):
    if source.cache is not None and not source.cached and _offline():
        raise source.unavailable(name, "CAMCLI_OFFLINE is set")
    try:
        with _downloads_quiet():
            return getattr(keras_hub.models, task).from_preset(source.preset)
    except Exception as error:  # network failures arrive as OSError, ValueError or Kaggle's own errors
        if source.cache is not None and not source.cached:
            raise source.unavailable(name, one_line(error)) from error
        raise ModelLoadError(f"cannot load KerasHub preset {name}: {one_line(error)}") from error


def _input_size(classifier, name: str) -> tuple[int, int]:
    """(height, width) from the preset's image converter, else from a fixed model input."""
    converter = getattr(getattr(classifier, "preprocessor", None), "image_converter", None)
    size = getattr(converter, "image_size", None)
    if size is None or None in tuple(size):
        size = tuple(classifier.inputs[0].shape[1:3])
    if None in size:
        raise ModelLoadError(f"{name}: the preset has no image converter with an image_size and the model takes "
                             f"any size {tuple(classifier.inputs[0].shape)}; camcli needs a fixed input size")
    return int(size[0]), int(size[1])


def converter_preprocess(classifier) -> str:
    """The image converter's arithmetic, x * scale + offset per channel, as a preprocessing mode."""
    converter = getattr(getattr(classifier, "preprocessor", None), "image_converter", None)
    return affine_mode(getattr(converter, "scale", None), getattr(converter, "offset", None))


def basnet_view(keras_hub, task) -> tuple[object, str | None]:
    """(the model camcli explains, its default layer; None: camcli's rule): the task itself, except for BASNet.

    BASNetImageSegmenter returns one of its backbone's eight outputs, the refinement module's sigmoid
    ("refine_out"), which camcli explains through a view of the backbone with that output alone (same layers and
    weights): one sigmoid channel, read as classes background (-logit) and foreground (logit). Its default layer
    is the prediction module's finest decoder stage, at the input's resolution, that its first side output
    reads: the last layer that sees the image. The refinement module after it sees only the coarse map.
    """
    import keras

    from camcli.models.keras_internals import input_layers

    if not isinstance(task, getattr(keras_hub.models, "BASNetImageSegmenter", ())):
        return task, None
    backbone = task.backbone
    view = keras.Model(backbone.input, backbone.get_layer(BASNET_OUTPUT).output, name=task.name)
    return view, input_layers(backbone.prediction_heads[0])[0].name


def _default_labels(classes: int, preset: str, is_segmenter: bool, binary: bool = False) -> list[str]:
    """ImageNet's names for a 1000-class classifier, VOC's for a 21-class segmenter whose preset names PASCAL VOC,
    background and foreground for a segmenter with one sigmoid channel (BASNet), else the class indices."""
    if is_segmenter and classes == len(VOC_CLASSES) and "pascalvoc" in preset.lower().replace("_", ""):
        return list(VOC_CLASSES)
    if is_segmenter and binary:
        return list(BINARY_CLASSES)
    if not is_segmenter and classes == _IMAGENET_CLASSES:
        return imagenet_labels()
    return index_labels(classes)


def load_hub_model(preset: str, weights: str | None = None, preprocess: str | None = None,
                   labels_file: str | None = None) -> LoadedModel:
    """A KerasHub image classifier, object detector or segmenter as a LoadedModel (BASNet's through a view of
    its backbone, `basnet_view`). `preprocess` replaces the converter's arithmetic; labels: `labels_file`, else
    ImageNet's names for 1000 classes (a classifier), COCO's for 91 (a detector), _default_labels' for a
    segmenter, else the class indices."""
    from camcli.models import detectors
    from camcli.models.layers import analyse_head

    name = catalog.HUB_PREFIX + preset
    if weights is not None:
        raise UsageError(f"`weights` applies to built-in models; {name} carries its own weights")
    if preprocess is not None:
        check_mode(preprocess)
    keras_hub = import_keras_hub()
    source = preset_source(keras_hub, preset)
    task = _from_preset(keras_hub, source, name, preset_task(keras_hub, source))
    detector = detectors.detector_head(task, name) if detectors.is_object_detector(task) else None
    model, layer = basnet_view(keras_hub, task)
    if detector is not None:
        layer = detectors.default_detector_layer(model)  # the backbone's finest pyramid level
        classes, default_labels = detector.num_classes, detectors.detector_labels(keras_hub, detector.num_classes)
    else:
        head = analyse_head(model)
        classes, segmenter = head.num_classes, isinstance(task, keras_hub.models.ImageSegmenter)
        default_labels = _default_labels(classes, preset, is_segmenter=segmenter, binary=head.binary)
    labels = read_labels(labels_file) if labels_file else default_labels
    if len(labels) != classes:
        raise UsageError(f"{labels_file} has {len(labels)} names but {name} has {classes} classes")
    return LoadedModel(model, name, _input_size(task, name), preprocess or converter_preprocess(task), labels,
                       pretrained=True, source_model=task, detector=detector, default_layer=layer)
