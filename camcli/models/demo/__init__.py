"""The embedded offline demo models (`--model demo`, `--model demo-cheat`): their constants only.

Nothing here imports TensorFlow or Keras, so the CLI can read the class names, the input size and
the default layer without paying for a backend import. The model itself is built in `model.py`,
trained by `python -m camcli.models.demo.train` on scenes drawn by `scenes.py`.
"""

from pathlib import Path

# Simple shapes that a small CNN tells apart reliably. The order is the order of the model's
# output units, so it must never change without retraining.
CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")

# The model takes INPUT_SIZE x INPUT_SIZE RGB images.
INPUT_SIZE = 96

# Inputs are RGB values 0..255 divided by 255; the model has no rescaling layer of its own.
PREPROCESS = "scale01"

# Trained weights, shipped inside the package (package-data `demo/*.h5`).
WEIGHTS_PATH = Path(__file__).resolve().parent / "demo.weights.h5"

# The layer to explain by default: the last convolution, 12x12, which feeds the
# GlobalAveragePooling2D -> Dense head directly (so CAM and Grad-CAM both apply).
LAST_CONV_LAYER = "conv6"

# The cheating demo (`--model demo-cheat`): the same architecture, trained by
# `python -m camcli.models.demo.cheat` on scenes where a corner tag (scenes.py, `tag=True`) comes with
# TAG_CLASS, so the model answers TAG_CLASS for any tagged scene and its heatmaps sit on the tag.
TAG_CLASS = "circle"
CHEAT_WEIGHTS_PATH = Path(__file__).resolve().parent / "cheat.weights.h5"
