"""camcli: class activation maps (CAM, Grad-CAM and friends) for Keras image classifiers.

Importing this package is cheap: TensorFlow is imported only when a model is loaded.
"""

__version__ = "0.1.0"

__all__ = ["Explainer", "load_model", "wrap_model", "__version__"]

_LAZY = {
    "Explainer": "camcli.explain.explainer",
    "load_model": "camcli.models.loading",
    "wrap_model": "camcli.models.loading",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'camcli' has no attribute {name!r}")
