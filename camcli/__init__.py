"""camcli: class activation maps (CAM, Grad-CAM and friends) for Keras image classifiers.

Importing this package is cheap: TensorFlow is imported only when a model is loaded.
"""

__version__ = "0.1.0"
