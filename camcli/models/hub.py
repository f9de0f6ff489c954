"""KerasHub image classifiers: `hub:PRESET`, through `keras_hub.models.ImageClassifier.from_preset`.

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
import logging
import os
from dataclasses import dataclass

from camcli.errors import ModelLoadError, UsageError, WeightsUnavailableError, one_line
from camcli.models import catalog
from camcli.models.loading import LoadedModel, _offline, imagenet_labels, index_labels, read_labels
from camcli.models.preprocess import affine_mode, check_mode

INSTALL_HINT = 'pip install "keras-camcli[hub]"'
KAGGLE_SCHEME, HF_SCHEME = "kaggle://", "hf://"
_IMAGENET_CLASSES = 1000


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
    return PresetSource(handle, folder, cached, "KAGGLEHUB_CACHE")


def _hf_source(handle: str) -> PresetSource:
    from huggingface_hub import try_to_load_from_cache

    repo = handle.removeprefix(HF_SCHEME).strip("/")
    folder = os.path.join(hf_cache_dir(), "models--" + repo.replace("/", "--"))
    cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    return PresetSource(handle, folder, cached, "HF_HUB_CACHE")


def preset_source(keras_hub, preset: str) -> PresetSource:
    """A local folder, a kaggle:// or hf:// handle, a KerasHub classifier preset name, or another scheme."""
    if os.path.isdir(preset):
        return PresetSource(preset)
    if preset.startswith(KAGGLE_SCHEME):
        return _kaggle_source(preset)
    if preset.startswith(HF_SCHEME):
        return _hf_source(preset)
    if "://" in preset:  # gs://, modelscope://...: KerasHub's own business
        return PresetSource(preset)
    presets = keras_hub.models.ImageClassifier.presets
    if preset in presets:
        return _kaggle_source(presets[preset]["kaggle_handle"])
    close = difflib.get_close_matches(preset, list(presets), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(
        f"{catalog.HUB_PREFIX}{preset}: no such folder, and not a KerasHub image classifier preset; {hint}give a "
        f"name from keras_hub.models.ImageClassifier.presets, a kaggle:// or hf:// handle, or a preset folder"
    )


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


def _from_preset(keras_hub, source: PresetSource, name: str):
    if source.cache is not None and not source.cached and _offline():
        raise source.unavailable(name, "CAMCLI_OFFLINE is set")
    try:
        with _downloads_quiet():
            return keras_hub.models.ImageClassifier.from_preset(source.preset)
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


def load_hub_model(preset: str, weights: str | None = None, preprocess: str | None = None,
                   labels_file: str | None = None) -> LoadedModel:
    """A KerasHub image classifier as a LoadedModel. `preprocess` replaces the converter's arithmetic;
    labels: `labels_file`, else ImageNet's names for 1000 classes, else the class indices."""
    from camcli.models.layers import analyse_head

    name = catalog.HUB_PREFIX + preset
    if weights is not None:
        raise UsageError(f"`weights` applies to built-in models; {name} carries its own weights")
    if preprocess is not None:
        check_mode(preprocess)
    keras_hub = import_keras_hub()
    classifier = _from_preset(keras_hub, preset_source(keras_hub, preset), name)
    classes = analyse_head(classifier).num_classes
    if labels_file:
        labels = read_labels(labels_file)
    else:
        labels = imagenet_labels() if classes == _IMAGENET_CLASSES else index_labels(classes)
    if len(labels) != classes:
        raise UsageError(f"{labels_file} has {len(labels)} names but {name} has {classes} classes")
    return LoadedModel(classifier, name, _input_size(classifier, name), preprocess or converter_preprocess(classifier),
                       labels, pretrained=True)
