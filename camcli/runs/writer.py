"""One image's outputs: overlays, heatmaps, masks and panels, then its record, all through the layout.

Before anything is written, every target path is checked: a file there that camcli did not write
(a user's `cat.json` beside `cat.jpg`, their own `cat.gradcam.281.png`) fails the image with
ForeignFileError and nothing of it is written. The run's inputs are never overwritten either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camcli.errors import CamcliError, ForeignFileError
from camcli.maps.boxes import box_from_map, draw_box, peak_xy, threshold_mask
from camcli.maps.overlay import blend, colormap_lut, resize_unit_rgb, upsample
from camcli.maps.panel import panel_title
from camcli.runs import records
from camcli.runs.discovery import ImageTask
from camcli.runs.files import save_json, save_npy, save_panel, save_png
from camcli.runs.layout import Layout, MapPaths, may_replace


@dataclass(frozen=True)
class OutputOptions:
    """What is written for each map, and how it looks."""

    alpha: float = 0.5
    colormap: str = "jet"
    box_threshold: float = 0.2  # the box keeps pixels >= this fraction of the map's maximum (CAM paper)
    draw_box: bool = False  # draw the box on the overlay
    save_heatmap: bool = False  # the map as float32 .npy at the image's resolution
    save_mask: bool = False  # the thresholded region as a binary PNG
    panel: bool = False  # original, heatmap with colour bar, overlay side by side
    png_compress_level: int = 1  # with zlib's Z_RLE strategy (see files.encode_png)

    def required_files(self) -> tuple[str, ...]:
        """The file keys of an explanation entry (records.MAP_FILE_KEYS) this run writes."""
        wanted = {"overlay": True, "heatmap": self.save_heatmap, "mask": self.save_mask, "panel": self.panel}
        return tuple(key for key, on in wanted.items() if on)

    def settings(self) -> dict:
        """The part of a record's fingerprint these options make."""
        return {"alpha": self.alpha, "colormap": self.colormap, "box_threshold": self.box_threshold,
                "draw_box": self.draw_box, "files": list(self.required_files()),
                "png_compress_level": self.png_compress_level}


@dataclass(frozen=True)
class RunIdentity:
    """What every record of a run shares: the model and layers, and the run's fingerprint."""

    model: str
    layer: str
    layers: list[str]
    pretrained: bool
    fingerprint: str


class ImageWriter:
    """Writes the outputs of explained images into one output folder. Thread-safe: it holds no
    per-image state, so the runner's writer threads share one."""

    def __init__(self, out_dir: Path, options: OutputOptions, identity: RunIdentity,
                 inputs: frozenset[str] = frozenset()):
        self.layout = Layout(out_dir)
        self.options = options
        self.identity = identity
        self.inputs = inputs  # real paths of the run's input images: never written
        colormap_lut(options.colormap)  # an unknown colour map fails before any image is written

    def targets(self, task: ImageTask, maps) -> list[tuple[object, MapPaths]]:
        return [(class_map, self.layout.map_paths(task.out_stem, class_map.method, class_map.class_index))
                for class_map in maps]

    def check_targets(self, task: ImageTask, planned: list[tuple[object, MapPaths]]) -> None:
        """ForeignFileError (or CamcliError for an input) when a path this image would write holds a
        file camcli did not write, checked before anything is written."""
        record_path = self.layout.record(task.out_stem)
        previous = records.read_image_record(record_path)
        listed = records.listed_files(previous, self.layout.out_dir)
        paths = [record_path] + [path for _, paths in planned for path in self._written(paths)]
        for path in paths:
            if os.path.realpath(path) in self.inputs:
                raise CamcliError(f"output {path} would overwrite an input image; write to another output "
                                  "folder (`out`)")
            if not may_replace(path, listed):
                raise ForeignFileError(path)

    def _written(self, paths: MapPaths) -> list[Path]:
        options = self.options
        return [paths.overlay] + [paths.heatmap] * options.save_heatmap + [paths.mask] * options.save_mask \
            + [paths.panel] * options.panel

    def write(self, task: ImageTask, rgb: np.ndarray, result) -> None:
        """Every map's files, then the record (last: a record means the image is complete)."""
        planned = self.targets(task, result.maps)
        self.check_targets(task, planned)
        height, width = rgb.shape[:2]
        explanations = [self._write_map(rgb, class_map, paths) for class_map, paths in planned]
        identity = self.identity
        record = records.image_record(
            image=task.display, width=width, height=height, model=identity.model, layer=identity.layer,
            layers=identity.layers, explanations=explanations, fingerprint=identity.fingerprint,
            pretrained=identity.pretrained,
            predictions=[{"rank": p.rank, "index": p.index, "label": p.label, "score": p.score}
                         for p in result.predictions],
        )
        save_json(self.layout.record(task.out_stem), record)

    def _write_map(self, rgb: np.ndarray, class_map, paths: MapPaths) -> dict:
        options = self.options
        height, width = rgb.shape[:2]
        heatmap = upsample(class_map.heatmap, (width, height))
        box = box_from_map(heatmap, options.box_threshold)
        if class_map.image is not None:  # guided methods: the RGB gradient image, not a blend
            picture = resize_unit_rgb(class_map.image, (width, height))
        else:
            picture = blend(rgb, heatmap, options.alpha, colormap_lut(options.colormap))
        if options.draw_box:
            picture = draw_box(picture, box)
        save_png(paths.overlay, picture, compress_level=options.png_compress_level)
        if options.save_heatmap:
            save_npy(paths.heatmap, heatmap.astype(np.float32))
        if options.save_mask:
            mask = threshold_mask(heatmap, options.box_threshold).astype(np.uint8) * 255
            save_png(paths.mask, mask, compress_level=options.png_compress_level)
        if options.panel:
            title = panel_title(class_map.label, class_map.score, class_map.method, class_map.layers)
            save_panel(paths.panel, rgb, None if class_map.image is not None else heatmap, picture, title,
                       options.colormap)
        relative = self.layout.relative
        peak = peak_xy(heatmap)
        return {
            "method": class_map.method,
            "layer": class_map.layer,
            "layers": class_map.layers,
            "class_index": class_map.class_index,
            "label": class_map.label,
            "score": class_map.score,
            "overlay": relative(paths.overlay),
            "heatmap": relative(paths.heatmap) if options.save_heatmap else None,
            "peak": list(peak) if peak is not None else None,
            "bbox": list(box) if box is not None else None,
            "mask": relative(paths.mask) if options.save_mask else None,
            "panel": relative(paths.panel) if options.panel else None,
            "raw_max": class_map.raw_max,
            "empty": class_map.empty,
        }
