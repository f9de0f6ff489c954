"""How alike two maps are: SSIM of their magnitudes (the sanity check's, and evaluate's random logit)."""

from __future__ import annotations

import importlib

import numpy as np

from camcli.errors import UsageError
from camcli.maps.overlay import upsample

# The packages the comparisons of maps need (the `audit` extra): module -> what to call it in a message.
PACKAGES = {"scipy.stats": "scipy", "skimage.metrics": "scikit-image"}


def require_packages(who: str, modules=tuple(PACKAGES)) -> None:
    """UsageError, in one line, naming what `who` needs, when one of `modules` (of PACKAGES) cannot be imported."""
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        names = " and ".join(PACKAGES[module] for module in modules)
        raise UsageError(f"{who} needs {names}: pip install 'keras-camcli[audit]'") from None


def finite_array(values) -> np.ndarray:
    """float64, NaN and infinities as 0."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def unit_magnitude(values) -> np.ndarray:
    """|map| divided by its maximum: [0, 1], all zero for a zero map."""
    magnitude = np.abs(finite_array(values))
    top = float(magnitude.max()) if magnitude.size else 0.0
    return magnitude / top if top > 0.0 else np.zeros_like(magnitude)


def structural_similarity(a, b) -> float:
    """SSIM of the maps' magnitudes scaled to [0, 1] (data_range 1), with the largest odd window up to
    7 that fits; maps smaller than 3 pixels a side are upsampled to 7x7 first."""
    from skimage.metrics import structural_similarity as ssim

    a, b = unit_magnitude(a), unit_magnitude(b)
    if np.array_equal(a, b):
        return 1.0
    if min(a.shape) < 3:
        a, b = (upsample(m.astype(np.float32), height=7, width=7).astype(np.float64) for m in (a, b))
    side = min(7, *a.shape)
    return float(ssim(a, b, data_range=1.0, win_size=side if side % 2 else side - 1))
