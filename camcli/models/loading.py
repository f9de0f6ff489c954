"""Loading a classifier: a built-in `keras.applications` model, the embedded demo, or a user's file.

Every failure becomes a one-line `ModelLoadError` / `WeightsUnavailableError` saying what to do.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from camcli.errors import CamcliError, ModelLoadError, UsageError, WeightsUnavailableError, one_line
from camcli.models import catalog

WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null. TensorFlow's C++ start-up lines ("All log messages
    before absl::InitializeLog()...", oneDNN notices) ignore TF_CPP_MIN_LOG_LEVEL in recent builds,
    and would land in every CLI run's stderr. Python exceptions are unaffected."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Import Keras on the TensorFlow backend, quietly. Set CAMCLI_TF_LOGS=1 to see TF's own logs."""
    if "keras" not in sys.modules or "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        quiet = os.environ.get("CAMCLI_TF_LOGS", "") in ("", "0")
        with _native_stderr_silenced() if quiet else contextlib.nullcontext():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    return sys.modules["keras"]


@dataclass
class LoadedModel:
    """A classifier ready to explain. `model` is the caller's object and is never modified."""

    model: object  # keras.Model: the caller's, or a view of it with the chosen output (same layers)
    name: str
    input_size: tuple[int, int]  # (height, width)
    preprocess: str
    labels: list[str]
    pretrained: bool  # False when the weights are random: predictions mean nothing
    builtin: catalog.BuiltinModel | None = None
    weights_path: str | None = None  # the file the weights came from; None: in memory, or random
    source_model: object = None  # the caller's model, as given (`model` may be a view of it)
    image_input: int = 0  # the image's position among model.inputs
    input_names: tuple[str, ...] = ()  # every input's name, in model.inputs order
    extra_inputs: Callable[[str], Mapping[str, object]] | None = None  # key -> the other inputs of one image
    output_name: str | None = None  # the explained output, for a model with several
    detector: object = None  # a KerasHub object detector's camcli.models.detectors.DetectorHead; None otherwise
    default_layer: str | None = None  # the maps' layer without `layers`; None: camcli.models.layers.default_layer

    @property
    def extra_input_names(self) -> list[str]:
        return [name for i, name in enumerate(self.input_names) if i != self.image_input]

    def extra_arrays(self, key: str) -> dict[str, object]:
        """The extra inputs of one image, from `extra_inputs(key)`, each shaped as its input (without the
        batch axis) in its dtype; UsageError naming what is missing or mis-shaped."""
        import numpy as np

        try:
            given = self.extra_inputs(key)
        except CamcliError:
            raise
        except Exception as error:  # noqa: BLE001 - the caller's function failed, not camcli
            raise CamcliError(f"`extra_inputs` failed for {key}: {type(error).__name__}: {one_line(error)}") from error
        if not isinstance(given, Mapping):
            raise UsageError(f"`extra_inputs` returned {type(given).__name__} for {key}; return {{input name: "
                             "values}")
        arrays = {}
        for name in self.extra_input_names:
            if name not in given:
                raise UsageError(f"no value of input {name!r} for {key}; give every extra input "
                                 f"({', '.join(self.extra_input_names)})")
            tensor = self.model.inputs[self.input_names.index(name)]
            shape = tuple(tensor.shape)[1:]
            values = input_values(given[name], str(tensor.dtype), f"input {name!r} of {key}")
            if None not in shape and values.size != int(np.prod(shape, dtype=np.int64)):
                raise UsageError(f"input {name!r} takes {int(np.prod(shape, dtype=np.int64))} values per image "
                                 f"(shape {shape}), and {key} has {values.size}")
            arrays[name] = values.reshape(shape) if None not in shape else values
        return arrays

    def interface(self) -> dict:
        """How the model is fed and read, for records' fingerprints."""
        identity = getattr(self.extra_inputs, "identity", None)
        if identity is None and self.extra_inputs is not None:
            identity = getattr(self.extra_inputs, "__qualname__", type(self.extra_inputs).__name__)
        return {"image_input": self.input_names[self.image_input] if len(self.input_names) > 1 else None,
                "extra_inputs": identity, "output": self.output_name}

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def weights_identity(self) -> str:
        """What identifies the weights in a record's fingerprint: "none" for random weights, else a
        digest of the weights file (or, for a model built in memory, of the weights themselves)."""
        if not self.pretrained:
            return WEIGHTS_NONE
        if self.weights_path is not None:
            return "sha256:" + file_digest(self.weights_path)
        digest = hashlib.sha256()
        for array in self.model.get_weights():
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        return "sha256:" + digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, modification time) within a process."""
    st = os.stat(path)
    return _cached_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def keras_cache_dir() -> Path:
    """Where Keras looks for downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, in index order (from the class index Keras uses, shipped)."""
    text = resources.files("camcli").joinpath("data/imagenet_class_index.json").read_text("utf-8")
    index = json.loads(text)
    return [index[str(i)][1] for i in range(len(index))]


def index_labels(count: int) -> list[str]:
    """The labels of a model whose classes have no names: their indices, "0".."count-1"."""
    return [str(i) for i in range(count)]


def read_labels(path: str | os.PathLike) -> list[str]:
    try:
        lines = Path(path).read_text("utf-8-sig").splitlines()  # -sig: tolerate a BOM
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(
            f"cannot read labels file {path}: {error}; give a UTF-8 text file, one class name per line"
        ) from error
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise UsageError(f"labels file {path} is empty; give one class name per line")
    return labels


def _weights_missing(entry: catalog.BuiltinModel, reason: str) -> WeightsUnavailableError:
    cached = keras_cache_dir() / entry.weights_file
    return WeightsUnavailableError(
        f"{entry.name}: ImageNet weights not found at {cached} and could not be downloaded ({reason}); "
        f"either pass `weights=/path/to/{entry.weights_file}`, or copy that file to {cached.parent}/ "
        f"(or point KERAS_HOME at a folder whose models/ holds it); `weights=none` runs with random weights"
    )


def _offline() -> bool:
    return os.environ.get("CAMCLI_OFFLINE", "") not in ("", "0")


def load_builtin(entry: catalog.BuiltinModel, weights: str | None) -> LoadedModel:
    keras = import_keras()
    constructor = getattr(keras.applications, entry.constructor)
    weights = weights or WEIGHTS_IMAGENET
    # classifier_activation=None makes the model we build output logits (the score before the
    # softmax that Grad-CAM differentiates); camcli applies the softmax itself.
    if weights == WEIGHTS_IMAGENET:
        if _offline() and not (keras_cache_dir() / entry.weights_file).is_file():
            raise _weights_missing(entry, "CAMCLI_OFFLINE is set")
        try:
            model = constructor(weights=WEIGHTS_IMAGENET, classifier_activation=None)
        except Exception as error:  # Keras' download raises a bare Exception on network failure
            if (keras_cache_dir() / entry.weights_file).is_file():
                raise ModelLoadError(f"{entry.name}: cached weights {keras_cache_dir() / entry.weights_file} "
                                     f"are unusable ({one_line(error)}); delete the file and retry") from error
            raise _weights_missing(entry, one_line(error)) from error
    else:
        if weights != WEIGHTS_NONE and not os.path.isfile(weights):  # before the (slow) build
            raise ModelLoadError(
                f"weights file {weights} does not exist; give the path of a Keras .h5 weights file for {entry.name}"
            )
        model = constructor(weights=None, classifier_activation=None)
        if weights != WEIGHTS_NONE:
            _load_weights_file(model, weights, entry.name)
    if weights == WEIGHTS_IMAGENET:
        weights_path = str(keras_cache_dir() / entry.weights_file)
    else:
        weights_path = None if weights == WEIGHTS_NONE else weights
    return LoadedModel(model, entry.name, (entry.input_size, entry.input_size), entry.preprocess,
                       imagenet_labels(), pretrained=weights != WEIGHTS_NONE, builtin=entry,
                       weights_path=weights_path if weights_path and os.path.isfile(weights_path) else None)


def _load_weights_file(model, path: str, name: str) -> None:
    try:
        model.load_weights(path)
    except Exception as error:
        raise ModelLoadError(f"cannot load weights {path} into {name}: {one_line(error)}") from error


def load_demo(name: str = catalog.DEMO_NAME) -> LoadedModel:
    """An embedded offline model (`catalog.DEMO_NAMES`) with its shipped weights."""
    from camcli.models import demo
    from camcli.models.demo.model import load_cheat_model, load_demo_model

    entry = catalog.demo_entry(name)
    cheat = name == catalog.DEMO_CHEAT_NAME
    model = load_cheat_model() if cheat else load_demo_model()
    return LoadedModel(model, entry.name, (demo.INPUT_SIZE, demo.INPUT_SIZE), demo.PREPROCESS,
                       list(demo.CLASSES), pretrained=True, builtin=entry,
                       weights_path=str(demo.CHEAT_WEIGHTS_PATH if cheat else demo.WEIGHTS_PATH))


def load_user_model(path: str, preprocess: str | None, labels_file: str | None, unsafe_load: bool = False,
                    **interface) -> LoadedModel:
    """A .keras/.h5 file; `interface`: wrap_model's image_input, extra_inputs and output."""
    keras = import_keras()
    if os.path.isdir(path):
        raise ModelLoadError(f"model {path} is a folder, not a .keras or .h5 file; a KerasHub preset folder is "
                             f"given as hub:{path}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        # safe_mode refuses Lambda layers and other code stored inside the file.
        model = keras.models.load_model(path, compile=False, safe_mode=not unsafe_load)
    except Exception as error:
        message = one_line(error)
        if "safe_mode" in message or "Lambda" in message or "unsafe" in message.lower():
            raise ModelLoadError(
                f"{path} contains code (e.g. a Lambda layer) that Keras will not run in safe mode; "
                f"if you trust this file, rerun with `unsafe_load`"
            ) from error
        damaged = _damaged(path, message)
        if damaged:
            raise ModelLoadError(f"cannot load model {path}: {damaged}; save the model again, or copy the whole "
                                 "file") from error
        if not _looks_like_model_file(path):
            raise ModelLoadError(
                f"cannot load model {path}: not a Keras model file (a .keras file is a zip archive, an .h5 "
                f"file is HDF5); check the path, or re-save the model with model.save('model.keras')"
            ) from error
        raise ModelLoadError(f"cannot load model {path}: {message}") from error
    loaded = wrap_model(model, preprocess=preprocess or "none", labels_file=labels_file, name=path, **interface)
    loaded.weights_path = path
    _warn_about_scaling(model, path, preprocess)
    return loaded


class PreprocessWarning(UserWarning):
    """A model file's pixels may be scaled wrongly: not at all, or twice (one line; the CLI prints it
    as `camcli: warning: ...`)."""


def _warn_about_scaling(model, path: str, preprocess: str | None) -> None:
    """Warn when a model file gets raw 0..255 pixels without saying so, or pixels scaled twice."""
    from camcli.models.layers import input_scaling

    scaling = input_scaling(model)
    if preprocess is None and scaling is None:
        warnings.warn(f"model {path} has no Rescaling or Normalization layer at its input, and no `preprocess` was "
                      "given: its pixels go in as 0..255; if it was trained on scaled pixels, choose `preprocess` "
                      "(scale01 = x/255, or its keras.applications mode), or `preprocess=none` to keep them",
                      PreprocessWarning, stacklevel=3)
    elif preprocess not in (None, "none") and scaling is not None:
        warnings.warn(f"model {path} scales its own pixels ({scaling} at its input), and `preprocess={preprocess}` "
                      "scales them first: they are scaled twice; drop `preprocess`", PreprocessWarning, stacklevel=3)


def _damaged(path: str, message: str) -> str | None:
    """Why a file that starts as a model file cannot be one: a truncated or damaged zip archive (Keras
    says "File not found" of it) or HDF5 file; None when it looks whole."""
    import zipfile

    with open(path, "rb") as file:
        head = file.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError):
            return "the .keras file is truncated or damaged (not a whole zip archive)"
        return f"the .keras file is damaged ({broken} fails its checksum)" if broken else None
    if head == b"\x89HDF\r\n\x1a\n" and "truncated" in message.lower():
        return "the .h5 file is truncated (shorter than its HDF5 header says)"
    return None


def _looks_like_model_file(path: str) -> bool:
    """Whether the file starts like a zip archive (.keras) or an HDF5 file (.h5)."""
    with open(path, "rb") as file:
        head = file.read(8)
    return head.startswith(b"PK\x03\x04") or head == b"\x89HDF\r\n\x1a\n"


def input_values(given, dtype: str, what: str):
    """`given` as a model input of `dtype` takes it: UsageError naming `what` for text, and for an integer
    input (an embedding's indices) for numbers that are not whole or do not fit (they were truncated)."""
    import numpy as np

    try:
        kind = np.dtype(dtype)
        values = np.asarray(given, dtype=np.float64 if kind.kind in "iu" else kind)
    except (TypeError, ValueError):
        raise UsageError(f"{what} holds something other than numbers: {given!r:.40}") from None
    if kind.kind in "iu":
        limits = np.iinfo(kind)
        bad = values[~((values == np.round(values)) & (values >= limits.min) & (values <= limits.max))]
        if bad.size:
            raise UsageError(f"{what} holds {bad.flat[0]:g}, and the input takes whole numbers ({dtype})")
        values = values.astype(kind)
    return values


def check_labels(labels) -> None:
    """`labels`, a list of class names (one string would be read letter by letter): UsageError otherwise."""
    if labels is not None and (isinstance(labels, (str, bytes, Mapping)) or not isinstance(labels, Iterable)):
        raise UsageError(f"`labels` takes a list of class names, one per class, not {type(labels).__name__} "
                         f"{labels!r:.40}")


def _check_wrapped(model, labels, extra_inputs) -> None:
    """wrap_model's arguments that are of the wrong kind, in one line each."""
    if not isinstance(model, import_keras().Model):
        hint = "; camcli.load_model loads a built-in name or a model file" if isinstance(model, str) else ""
        raise UsageError(f"wrap_model takes a Keras model, not {type(model).__name__} {model!r:.40}{hint}")
    if not getattr(model, "inputs", None):
        raise UsageError(f"model {model.name} is not built: it has no inputs yet; make it from keras.Input(...), or "
                         "call it on a batch of images first")
    check_labels(labels)
    if extra_inputs is not None and not callable(extra_inputs) and not isinstance(extra_inputs, (str, os.PathLike)):
        raise UsageError(f"`extra_inputs` takes a CSV or JSON table's path, or a function of the image's key, not "
                         f"{type(extra_inputs).__name__} {extra_inputs!r:.40}")


def wrap_model(model, preprocess: str = "none", labels: list[str] | None = None,
               labels_file: str | None = None, name: str | None = None, *, image_input: str | None = None,
               extra_inputs: Callable[[str], Mapping[str, object]] | None = None,
               output: str | None = None) -> LoadedModel:
    """Describe an in-memory Keras model for an Explainer (notebooks, tests, user files).

    image_input: the name of the image input, for a model with several inputs; `extra_inputs` then
    gives the others for each image: called with the image's key (its path in a run) it returns
    {input name: array without the batch axis}; `camcli.models.extra_inputs.read_table` reads one
    from a CSV or JSON file. output: the name of the output to explain, for a model with several
    (the others are ignored). The model itself is never changed: a chosen output is explained on a
    view of the model that shares its layers and weights.
    """
    from camcli.models.layers import analyse_head

    _check_wrapped(model, labels, extra_inputs)
    name = name or model.name
    if isinstance(extra_inputs, (str, os.PathLike)):
        from camcli.models.extra_inputs import read_table

        extra_inputs = read_table(extra_inputs)
    image_index, input_names = _image_input(model, name, image_input, extra_inputs)
    shape = model.inputs[image_index].shape if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ModelLoadError(
            f"model {name} takes input of shape {shape}; camcli explains (batch, height, width, 3) images"
        )
    height, width = shape[1], shape[2]
    if height is None or width is None:
        raise ModelLoadError(
            f"model {name} has no fixed input size {tuple(shape)}; rebuild it with a fixed height and width"
        )
    if preprocess not in catalog.PREPROCESS_MODES:
        raise UsageError(f"unknown preprocessing {preprocess!r}: choose one of {', '.join(catalog.PREPROCESS_MODES)}")
    view, output_name = _output_view(model, name, output)
    head = analyse_head(view)
    if labels is None:
        labels = read_labels(labels_file) if labels_file else index_labels(head.num_classes)
    if len(labels) != head.num_classes:
        source = labels_file or "labels"
        raise UsageError(f"{source} has {len(labels)} names but the model has {head.num_classes} classes")
    return LoadedModel(view, name, (int(height), int(width)), preprocess, list(labels), pretrained=True,
                       source_model=model, image_input=image_index, input_names=input_names,
                       extra_inputs=extra_inputs if len(input_names) > 1 else None, output_name=output_name)


def shape_text(shape) -> str:
    """A tensor's shape as messages write it: (batch, 224, 224, 3)."""
    return "(" + ", ".join("batch" if i == 0 else str(d) for i, d in enumerate(shape)) + ")"


def input_name(tensor) -> str:
    """An input's name: its Input layer's (what `keras.Input(name=...)` set)."""
    from camcli.models.keras_internals import producing_layer

    return producing_layer(tensor).name


def _image_input(model, name: str, image_input: str | None, extra_inputs) -> tuple[int, tuple[str, ...]]:
    """(position of the image among the model's inputs, every input's name); UsageError listing the
    inputs when there are several and the image input or the others are not given."""
    inputs = list(getattr(model, "inputs", None) or [])
    names = tuple(input_name(tensor) for tensor in inputs)
    listed = ", ".join(f"{n}: {shape_text(t.shape)}" for n, t in zip(names, inputs))
    if len(inputs) <= 1:
        if image_input is not None and image_input not in names:
            raise UsageError(f"model {name} has no input named {image_input!r} (its input: {listed})")
        if extra_inputs is not None:
            raise UsageError(f"model {name} has one input ({listed}): `extra_inputs` gives the other inputs of a "
                             "model with several; drop it")
        return 0, names
    if image_input is None:
        raise UsageError(f"model {name} has {len(inputs)} inputs ({listed}); name the image input with "
                         "`image_input=NAME` and give the others with `extra_inputs`")
    if image_input not in names:
        raise UsageError(f"model {name} has no input named {image_input!r}; its inputs are {listed}")
    if len(inputs[names.index(image_input)].shape) != 4:
        raise UsageError(f"input {image_input!r} of model {name} is no image, (batch, height, width, 3): name the "
                         f"image input with `image_input` (its inputs are {listed})")
    if extra_inputs is None:
        others = ", ".join(n for n in names if n != image_input)
        raise UsageError(f"model {name} also takes {others}; give them per image with `extra_inputs` "
                         "(a CSV or JSON table keyed by image path)")
    return names.index(image_input), names


def output_names(model) -> list[str]:
    names = getattr(model, "output_names", None)
    outputs = list(getattr(model, "outputs", None) or [])
    if names and len(names) == len(outputs):
        return list(names)
    from camcli.models.keras_internals import producing_layer

    return [producing_layer(tensor).name for tensor in outputs]


def _output_view(model, name: str, output: str | None):
    """(the model to explain, the chosen output's name): the model itself when it has one output, else
    a Functional view of it that computes only the chosen output, on the same layers and weights."""
    outputs = list(getattr(model, "outputs", None) or [])
    names = output_names(model)
    listed = ", ".join(f"{n}: {shape_text(t.shape)}" for n, t in zip(names, outputs))
    if output is not None and output not in names:
        raise UsageError(f"model {name} has no output named {output!r}; its outputs are {listed}")
    if len(outputs) <= 1:
        return model, output
    if output is None:
        raise UsageError(f"model {name} has {len(outputs)} outputs ({listed}); choose the one to explain with "
                         "`output=NAME`")
    keras = import_keras()
    view = keras.Model(model.inputs, outputs[names.index(output)], name=model.name)
    return view, output


def load_model(spec: str, weights: str | None = None, preprocess: str | None = None,
               labels_file: str | None = None, unsafe_load: bool = False, **interface) -> LoadedModel:
    """Load `spec`: a built-in name (see `camcli models`), "demo", "demo-cheat", a .keras/.h5 file, or
    "hub:PRESET", a KerasHub image classifier preset (camcli.models.hub).

    Whatever Keras prints while loading ("Downloading data from ...") goes to stderr, so that stdout
    stays clean for `--json`. `interface`: wrap_model's image_input, extra_inputs and output, for
    model files with several inputs or outputs.
    """
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(spec, str):
        raise UsageError(f"load_model takes a built-in name, a model file or hub:PRESET, not {type(spec).__name__} "
                         f"{spec!r:.40}; camcli.wrap_model wraps a Keras model")
    with contextlib.redirect_stdout(sys.stderr):
        import_keras()  # first, so that no path (the demo's module imports keras) imports it loudly
        return _load_model(spec, weights, preprocess, labels_file, unsafe_load, interface)


def _load_model(spec, weights, preprocess, labels_file, unsafe_load, interface) -> LoadedModel:
    given = [name for name, value in interface.items() if value is not None]
    if spec.startswith(catalog.HUB_PREFIX):
        from camcli.models.hub import load_hub_model

        if given:
            raise UsageError(f"`{given[0]}` applies to model files with several inputs or outputs; a KerasHub "
                             "image classifier has one of each")
        return load_hub_model(spec.removeprefix(catalog.HUB_PREFIX), weights, preprocess, labels_file)
    entry = catalog.lookup(spec)
    if entry is not None and given:
        raise UsageError(f"`{given[0]}` applies to model files with several inputs or outputs; {spec!r} is built in "
                         "and has one of each")
    if entry is not None:
        if preprocess or labels_file:
            raise UsageError(f"`preprocess` and `labels_file` apply to model files; {spec!r} is built in")
        if entry.name in catalog.DEMO_NAMES:
            if weights not in (None, WEIGHTS_IMAGENET):
                raise UsageError(f"the {entry.name} model ships its own weights; drop `weights`")
            return load_demo(entry.name)
        return load_builtin(entry, weights)
    if spec.lower().endswith((".keras", ".h5")) or os.path.exists(spec):
        if weights is not None:
            raise UsageError("`weights` applies to built-in models; a model file carries its own weights")
        return load_user_model(spec, preprocess, labels_file, unsafe_load=unsafe_load, **interface)
    close = difflib.get_close_matches(spec.lower(), catalog.builtin_names(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(f"unknown model {spec!r}: {hint}use a name from `camcli models`, a .keras/.h5 file "
                     "or hub:PRESET (KerasHub)")


