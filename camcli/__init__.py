"""camcli: class activation maps (CAM, Grad-CAM and friends) for Keras image classifiers.

The library behind the `camcli` command. Importing this package is cheap: TensorFlow is imported
only when a model is loaded.

    >>> import camcli
    >>> summary = camcli.explain_paths(["photos/"], model="demo", out="results")
    >>> explainer = camcli.Explainer(camcli.load_model("demo"), method="gradcam")  # or a Keras model
    >>> [result] = explainer.explain([image])  # uint8 or float [0, 1]; RGB, greyscale or RGBA
    >>> camcli.overlay(image, result.maps[0])  # a PIL image at the image's size
"""

__version__ = "0.1.0"

__all__ = [
    "Explainer",
    "MethodSet",
    "load_model",
    "wrap_model",
    "load_rgb",
    "overlay",
    "explain_paths",
    "evaluate_paths",
    "sanity_paths",
    "audit_paths",
    "write_report",
    "list_layers",
    "merge_summaries",
    "ExplainCallback",
    "__version__",
]

_LAZY = {
    "Explainer": "camcli.explain.explainer",
    "MethodSet": "camcli.explain.explainer",
    "load_model": "camcli.models.loading",
    "wrap_model": "camcli.models.loading",
    "load_rgb": "camcli.runs.decode",
    "overlay": "camcli.explain.display",
    "explain_paths": "camcli.api",
    "evaluate_paths": "camcli.api",
    "sanity_paths": "camcli.api",
    "audit_paths": "camcli.api",
    "write_report": "camcli.api",
    "list_layers": "camcli.api",
    "merge_summaries": "camcli.api",
    "ExplainCallback": "camcli.keras",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'camcli' has no attribute {name!r}")
