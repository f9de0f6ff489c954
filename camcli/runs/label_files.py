"""Label map files: camcli's palette PNGs (`explain --save-segmentation`) and VOC `SegmentationClass`
masks (`evaluate --truth-masks`)."""

import io

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from camcli.errors import UsageError
from camcli.maps.segmentation import voc_palette
from camcli.runs.files import write_bytes_atomic
from camcli.runs.layout import MARKER_KEY, MARKER_VALUE

_MASK_MODES = ("P", "L")


def read_palette_mask(path) -> np.ndarray:
    """The (H, W) uint8 class indices of a VOC `SegmentationClass` PNG (palette or greyscale).

    A palette PNG's pixels are the palette indices, which are the class numbers; converting it to
    RGB would turn them into colours. Any other file is refused with a UsageError.
    """
    try:
        with Image.open(path) as image:
            image_format, mode = image.format, image.mode
            if image_format == "PNG" and mode in _MASK_MODES:
                return np.array(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{path}: cannot read it as a segmentation mask ({reason}); give a VOC "
                         "SegmentationClass PNG (palette or greyscale, pixel values = class numbers)") from None
    raise UsageError(f"{path}: a segmentation mask must be a palette ('P') or greyscale ('L') PNG, and this is "
                     f"{image_format} in mode {mode}; save it with one class number per pixel, as VOC's "
                     "SegmentationClass PNGs are")


def save_label_map(path, labels: np.ndarray) -> None:
    """Write (H, W) `labels` as a palette PNG with VOC's colours and camcli's marker, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or 0 in labels.shape:
        raise ValueError(f"expected a non-empty (H, W) label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 255:
        raise ValueError("a label map holds integers from 0 to 255")
    image = Image.fromarray(labels.astype(np.uint8))  # mode 'L'; putpalette makes it 'P'
    image.putpalette(voc_palette().tobytes())
    info = PngImagePlugin.PngInfo()
    info.add_text(MARKER_KEY, MARKER_VALUE)  # the marker is_camcli_png looks for (camcli.runs.layout)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes_atomic(path, buffer.getvalue())
