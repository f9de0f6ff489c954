"""Input preprocessing in numpy, one function per `keras.applications` mode.

Doing this in numpy (rather than calling Keras) keeps decoding threads free of TensorFlow and lets
the batch step receive ready float32 arrays. tests/test_preprocess.py checks every mode against
`keras.applications.imagenet_utils.preprocess_input`.
"""

from __future__ import annotations

import numpy as np

from camcli.catalog import PREPROCESS_MODES
from camcli.errors import UsageError

# ImageNet channel statistics, as Keras' imagenet_utils uses them.
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Map RGB values in 0..255 (any float or uint8 array, channels last) to the model's input."""
    x = np.asarray(rgb, dtype=np.float32)
    if mode == "caffe":  # RGB -> BGR, then subtract the per-channel ImageNet mean (no scaling)
        return x[..., ::-1] - _CAFFE_BGR_MEAN
    if mode == "tf":  # scale to [-1, 1]
        return x / 127.5 - 1.0
    if mode == "torch":  # scale to [0, 1], then standardise per channel
        return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    if mode == "scale01":
        return x / 255.0
    if mode == "none":
        return x
    raise UsageError(f"unknown preprocessing mode {mode!r}: choose one of {', '.join(PREPROCESS_MODES)}")
