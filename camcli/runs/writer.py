"""One image's outputs: overlays, heatmaps, masks and panels, then its record, all through the layout.

Before anything is written, every output path is checked: a file there that camcli did not write
(a user's `cat.json` beside `cat.jpg`, their own `cat.gradcam.281.png`) fails the image with
ForeignFileError and nothing of it is written. The run's inputs are never overwritten either.

Sizes. Pictures (overlays, masks, panels, saved heatmaps) are drawn at the decoded picture's size:
the original, or at most `max_size` on the longest side. Boxes and peaks are measured on the map
upsampled to at most MEASURE_SIDE pixels (the original size for smaller images) and scaled back,
so the record's `peak` and `bbox` are always in original-image pixels, whatever the output size.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from camcli.errors import CamcliError, ForeignFileError
from camcli.maps.boxes import DETECTION_COLOUR, box_from_map, draw_box, peak_xy, threshold_mask
from camcli.maps.fast_overlay import draw_overlay, rgb_array
from camcli.maps.label_settings import SEGMENTATION_SIDE
from camcli.maps.overlay import colormap_lut, resize_unit_rgb, upsample
from camcli.maps.panel import panel_title
from camcli.maps.refine import label_image
from camcli.maps.segmentation import MAX_CLASSES, labels_at_size
from camcli.options import FileOptions, fingerprint_fields
from camcli.runs import records
from camcli.runs.decode import PHOTO_FORMATS, DecodedImage, output_size
from camcli.runs.discovery import ImageTask
from camcli.runs.files import save_json, save_npy, save_panel, save_picture, save_png
from camcli.runs.label_files import save_label_map
from camcli.runs.layout import MAP_FILES, Layout, MapPaths, check_replaceable, may_replace

# Boxes and peaks are measured on the map at most this many pixels on its longest side (the
# map comes from a grid of 7x7 to 28x28 cells, so a finer grid adds no information; a 12 MP photo's
# box costs 2 ms instead of 100), then scaled to original pixels.
MEASURE_SIDE = 512


def overlay_format_for(requested: str, source_format: str | None) -> str:
    """The overlay format of one image: `requested`, or for "auto" JPEG for photos (JPEG, HEIC, AVIF)
    and PNG for everything else (lossless inputs get lossless overlays)."""
    if requested != "auto":
        return requested
    return "jpg" if source_format in PHOTO_FORMATS else "png"


def required_files(files: FileOptions) -> tuple[str, ...]:
    """The file keys of an explanation entry (layout.MAP_FILES) a run with `files` writes."""
    return tuple(kind.key for kind in MAP_FILES if kind.option is None or getattr(files, kind.option))


def settings_of(files: FileOptions) -> dict:
    """The part of a record's fingerprint the file options make: every field that shapes the files
    (camcli.options.fingerprint_fields), the files written, and the label maps' working size."""
    settings = {**fingerprint_fields(files), "files": list(required_files(files))}
    if files.save_segmentation:
        settings["segmentation_side"] = SEGMENTATION_SIDE
    return settings


class ImageWriter:
    """Writes the outputs of explained images into one output folder. Thread-safe: it holds no
    per-image state, so the runner's writer threads share one."""

    def __init__(self, out_dir: Path, options: FileOptions, identity: records.RunIdentity,
                 inputs: frozenset[str] = frozenset()):
        self.layout = Layout(out_dir)
        self.options = options
        self.identity = identity
        self.inputs = inputs  # real paths of the run's input images: never written
        self.required = required_files(options)  # the file kinds every map of this run gets
        colormap_lut(options.colormap)  # an unknown colour map fails before any image is written

    def planned_files(self, task: ImageTask, maps, overlay_format: str = "png") -> list[tuple[object, MapPaths]]:
        return [(class_map, self.layout.map_paths(task.out_stem, class_map.method, class_map.class_index,
                                                  overlay_format, _detection_index(class_map)))
                for class_map in maps]

    def check_planned_files(self, task: ImageTask, planned: list[tuple[object, MapPaths]]) -> frozenset[str]:
        """ForeignFileError (or CamcliError for an input) when a path this image would write holds a
        file camcli did not write, checked before anything is written. Returns the real paths the
        image's previous record lists."""
        record_path = self.layout.record(task.out_stem)
        listed = records.read_listed_files(record_path, self.layout.out_dir)
        paths = [record_path] + [path for _, paths in planned for path in self._written(paths)] \
            + list(self.segmentation_paths(task, planned).values())
        for path in paths:
            if os.path.realpath(path) in self.inputs:
                raise CamcliError(f"output {path} would overwrite an input image; write to another output "
                                  "folder (`out`)")
            check_replaceable(path, lambda p: may_replace(p, listed), ForeignFileError)
        return listed

    def segmentation_paths(self, task: ImageTask, planned) -> dict[str, Path]:
        """{method: its label map's path} for the methods of `planned`, in order; empty unless asked for."""
        if not self.options.save_segmentation:
            return {}
        methods = dict.fromkeys(class_map.method for class_map, _ in planned)
        return {method: self.layout.segmentation(task.out_stem, method) for method in methods}

    def _written(self, paths: MapPaths) -> list[Path]:
        """The paths of one map's files this run writes (its per-method label map aside)."""
        return [paths[key] for key in self.required if key in paths]

    def write(self, task: ImageTask, decoded: DecodedImage | np.ndarray, result) -> None:
        """Every map's files, then the record (last: a record means the image is complete).
        `decoded` is the image as decode_image returned it (or an RGB uint8 array at full size)."""
        if isinstance(decoded, np.ndarray):
            picture = Image.fromarray(np.asarray(decoded, np.uint8))
            decoded = DecodedImage(picture, picture, picture.size, None)
        _check_finite_scores(result)  # before any file: a record could not hold them, and the image fails whole
        overlay_format = overlay_format_for(self.options.overlay_format, decoded.format)
        planned = self.planned_files(task, result.maps, overlay_format)
        previous = self.check_planned_files(task, planned)
        if self.options.save_heatmap:
            # Heatmaps carry no marker: a record naming them comes first, so that a run killed before
            # the real record is written can still replace them when resumed.
            pending = [self.layout.relative(paths["heatmap"]) for _, paths in planned]
            save_json(self.layout.record(task.out_stem), records.pending_record(task.display, pending))
        width, height = decoded.original_size
        pictures = _Pictures(decoded.picture)
        explanations = [self._write_map(decoded, pictures, class_map, paths, overlay_format)
                        for class_map, paths in planned]
        segmentation_paths = self.segmentation_paths(task, planned)
        segmentation = self._write_segmentations(decoded, planned, explanations, segmentation_paths) \
            if segmentation_paths else None
        detections = getattr(result, "detections", None)
        record = records.image_record(
            self.identity, image=task.display, width=width, height=height, explanations=explanations,
            output_size=decoded.picture.size, segmentation=segmentation,
            predictions=[{"rank": p.rank, "index": p.index, "label": p.label, "score": p.score}
                         for p in result.predictions],
            detections=None if detections is None else [d.record(width, height) for d in detections],
        )
        save_json(self.layout.record(task.out_stem), record)
        written = {os.path.realpath(path) for _, paths in planned for path in self._written(paths)}
        written |= {os.path.realpath(path) for path in segmentation_paths.values()}
        _remove_replaced(previous - written)

    def _write_map(self, decoded: DecodedImage, pictures: _Pictures, class_map, paths: MapPaths,
                   overlay_format: str) -> dict:
        """One map's files, each kind by its writer (MAP_WRITERS); returns the map's record entry."""
        options = self.options
        box, peak = measure(class_map.heatmap, decoded.original_size, options.box_threshold)
        if class_map.image is not None:  # guided methods: the RGB gradient image, not a blend
            drawn = Image.fromarray(resize_unit_rgb(class_map.image, decoded.picture.size))
        else:
            drawn = draw_overlay(decoded.picture, class_map.heatmap, options.alpha, colormap_lut(options.colormap))
        # The box goes on heatmaps only. A gradient picture is not the map the box was measured on
        # (guidedbackprop: the gradient's magnitude, whose largest region is a patch of edges;
        # guidedgradcam: its Grad-CAM map), so on it a box would mark nothing the picture shows.
        if options.draw_box and box is not None and class_map.image is None:
            # the box is in original pixels, the picture may be smaller
            drawn = Image.fromarray(draw_box(rgb_array(drawn), [value * decoded.scale for value in box]))
        detection = getattr(class_map, "detection", None)
        if detection is not None:  # a detector's map: the detection it explains, always drawn, in its own colour
            width, height = drawn.size
            drawn = Image.fromarray(draw_box(rgb_array(drawn), detection.box_in_pixels(width, height),
                                             DETECTION_COLOUR))
        work = _MapWork(options, decoded.picture, pictures, class_map, drawn, overlay_format)
        written = set(self._written(paths))
        for key, path in paths.items():
            if path in written:
                MAP_WRITERS[key](work, path)
        return {
            "method": class_map.method,
            "layer": class_map.layer,
            "layers": class_map.layers,
            "class_index": class_map.class_index,
            "label": class_map.label,
            "score": class_map.score,
            **{key: self.layout.relative(path) if path in written else None for key, path in paths.items()},
            "peak": list(peak) if peak is not None else None,
            "bbox": list(box) if box is not None else None,
            "raw_max": class_map.raw_max,
            "empty": class_map.empty,
            "guided": class_map.image is not None,  # the overlay is the method's gradient picture, not a blend
            **({} if detection is None else {"detection": detection.index,
                                             "box": [round(v, 2) for v in detection.box_in_pixels(
                                                 *decoded.original_size)]}),
        }

    def _write_segmentations(self, decoded: DecodedImage, planned, explanations: list[dict],
                             paths: dict[str, Path]) -> dict:
        """One label map per method (all its classes' maps against the background), at the original
        size; each map's entry gets its file and pixel value. Returns the record's `segmentation`."""
        options = self.options
        width, height = decoded.original_size
        work_width, work_height = output_size(decoded.picture.size, SEGMENTATION_SIDE)
        picture = decoded.picture if decoded.picture.size == (work_width, work_height) else \
            decoded.picture.resize((work_width, work_height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        rgb = np.asarray(picture.convert("RGB"), dtype=np.uint8)
        tables = {}
        for method, path in paths.items():
            entries = [(i, class_map) for i, (class_map, _) in enumerate(planned) if class_map.method == method]
            entries = entries[:MAX_CLASSES]  # values 1..254; 255 means "ignore" in VOC's masks
            maps = np.stack([upsample(class_map.heatmap, height=work_height, width=work_width)
                             for _, class_map in entries])
            labels = label_image(maps, rgb, options.label_threshold, options.refine)
            save_label_map(path, labels_at_size(labels, height, width))
            values = [{"value": 0, "class_index": None, "label": "background"}]
            for value, (i, class_map) in enumerate(entries, start=1):
                explanations[i]["segmentation"] = self.layout.relative(path)
                explanations[i]["segmentation_value"] = value
                values.append({"value": value, "class_index": class_map.class_index, "label": class_map.label})
            tables[method] = {"file": self.layout.relative(path), "values": values}
        return {"bg_threshold": options.label_threshold, "refine": options.refine, "maps": tables}


def _detection_index(class_map) -> int | None:
    """The index of the detection an object detector's map explains (its files are named by it); None otherwise."""
    detection = getattr(class_map, "detection", None)
    return None if detection is None else detection.index


def _check_finite_scores(result) -> None:
    """CamcliError when the model scored the image NaN or infinity (its maps are reported empty, but no
    record can hold such scores)."""
    scores = [p.score for p in result.predictions] + [m.score for m in result.maps]
    if not all(math.isfinite(score) for score in scores):
        raise CamcliError("the model's scores for this image are not finite (NaN or infinity): check the model's "
                          "weights and its preprocessing (`preprocess`)")


class _MapWork:
    """What one map's file writers share: its overlay as drawn (RGB, or "RGBX" from OpenCV: see
    camcli.maps.fast_overlay), and its heatmap at the picture's size (computed once, for the heatmap
    and the mask alike)."""

    def __init__(self, options: FileOptions, picture: Image.Image, pictures: _Pictures, class_map, drawn: Image.Image,
                 overlay_format: str):
        self.options, self.picture, self.pictures, self.class_map = options, picture, pictures, class_map
        self.drawn, self.overlay_format = drawn, overlay_format

    @functools.cached_property
    def heatmap(self) -> np.ndarray:
        return upsample(self.class_map.heatmap, height=self.picture.height, width=self.picture.width)


def _write_overlay(work: _MapWork, path: Path) -> None:
    save_picture(path, work.drawn, work.overlay_format, compress_level=work.options.png_compress_level)


def _write_heatmap(work: _MapWork, path: Path) -> None:
    save_npy(path, work.heatmap)


def _write_mask(work: _MapWork, path: Path) -> None:
    mask = threshold_mask(work.heatmap, work.options.box_threshold).astype(np.uint8) * 255
    save_png(path, mask, compress_level=work.options.png_compress_level)


def _write_panel(work: _MapWork, path: Path) -> None:
    class_map, small = work.class_map, work.pictures.small
    title = panel_title(class_map.label, class_map.score, class_map.method, class_map.layers)
    shown = None if class_map.image is not None else upsample(class_map.heatmap, height=small.height,
                                                                width=small.width)
    save_panel(path, np.asarray(small), shown,
               rgb_array(work.drawn.resize(small.size, Image.Resampling.BILINEAR, reducing_gap=3.0)),
               title, work.options.colormap)


# One writer per per-map kind of layout.MAP_FILES (label maps, one per method, are ImageWriter's own).
MAP_WRITERS = {"overlay": _write_overlay, "heatmap": _write_heatmap, "mask": _write_mask, "panel": _write_panel}


def _remove_replaced(paths) -> None:
    """Delete the files an image's previous record listed that this run no longer writes (an overlay
    now written as .jpg instead of .png, a mask no longer asked for), when camcli wrote them."""
    for path in paths:
        if may_replace(path, frozenset(paths)) and os.path.isfile(path):
            try:
                os.unlink(path)
            except OSError:
                pass  # a stale file left behind is harmless; the record no longer names it


class _Pictures:
    """The picture of one image, and a small copy of it for panels, made once per image."""

    PANEL_SIDE = 1024

    def __init__(self, picture: Image.Image):
        self.picture = picture
        self._small = None

    @property
    def small(self) -> Image.Image:
        if self._small is None:
            size = output_size(self.picture.size, self.PANEL_SIDE)
            self._small = self.picture if size == self.picture.size else \
                self.picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        return self._small


def measure(unit_map: np.ndarray, original_size: tuple[int, int], threshold: float):
    """(box, peak) of a map, in original-image pixels, measured at up to MEASURE_SIDE pixels.

    The box's edges are scaled outwards (floor and ceil), so the scaled box covers every original
    pixel of the measured one; the peak is the centre of its measured pixel, scaled.
    """
    width, height = original_size
    measured_width, measured_height = output_size(original_size, MEASURE_SIDE)
    measured = upsample(unit_map, height=measured_height, width=measured_width)
    box, peak = box_from_map(measured, threshold), peak_xy(measured)
    scale_x, scale_y = width / measured.shape[1], height / measured.shape[0]
    if scale_x == 1.0 and scale_y == 1.0:
        return box, peak
    if box is not None:
        x0, y0, x1, y1 = box
        box = (math.floor(x0 * scale_x), math.floor(y0 * scale_y),
               min(width, math.ceil(x1 * scale_x)), min(height, math.ceil(y1 * scale_y)))
    if peak is not None:
        peak = (min(width - 1, int((peak[0] + 0.5) * scale_x)), min(height - 1, int((peak[1] + 0.5) * scale_y)))
    return box, peak
