"""Shared fixtures. Nothing here downloads: CAMCLI_OFFLINE is set for the whole session, and Keras'
cache points at a temporary folder that holds only the real MobileNetV2 weights from ../shared."""

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_IMAGENET = SHARED / "imagenet"
SHARED_PHOTOS = SHARED / "photos"
MOBILENET_V2_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"

# Keras reads KERAS_HOME once, when it is first imported, so this must run before any test module
# imports keras. The cache is a fresh folder: a test never sees (or fills) the user's ~/.keras.
_KERAS_HOME = Path(tempfile.mkdtemp(prefix="camcli-keras-home-"))
(_KERAS_HOME / "models").mkdir()
if (SHARED_IMAGENET / MOBILENET_V2_WEIGHTS).is_file():
    for name in (MOBILENET_V2_WEIGHTS, "imagenet_class_index.json"):
        os.symlink(SHARED_IMAGENET / name, _KERAS_HOME / "models" / name)
os.environ["KERAS_HOME"] = str(_KERAS_HOME)
os.environ["CAMCLI_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

needs_shared_imagenet = pytest.mark.skipif(
    not (SHARED_IMAGENET / MOBILENET_V2_WEIGHTS).is_file() or not SHARED_PHOTOS.is_dir(),
    reason=f"real ImageNet weights/photos not found at {SHARED} (present in CI and on developer machines)",
)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """The six generated scenes (circle_1.png ... triangle_1.png) the demo model knows, with their
    truth.csv beside them; shared by the whole session, so tests copy them before writing near them."""
    from camcli.models.demo.samples import write_generated

    folder = tmp_path_factory.mktemp("scenes")
    write_generated(folder)
    return sorted(p for p in folder.iterdir() if p.suffix == ".png")
