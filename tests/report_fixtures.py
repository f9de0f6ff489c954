"""A camcli output folder without TensorFlow: per-image JSON records and overlay PNGs built through
the modules the runner writes with (camcli.runs.layout for the names, camcli.runs.records for the
record and summary schema), for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from camcli.maps.overlay import blend, colormap_lut
from camcli.runs import records
from camcli.runs.files import save_json, save_png
from camcli.runs.layout import Layout
from camcli.runs.runner import RunSummary

LABELS = ["circle", "square", "star", "ring"]


def write_photo(path: Path, size=(60, 40), seed=0) -> Path:
    """A random-but-structured RGB photo (a bright rectangle on a gradient), saved by extension."""
    width, height = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)
    pixels = np.stack([np.broadcast_to(x, (height, width)), np.full((height, width), 90.0),
                       np.broadcast_to(np.linspace(255, 0, height)[:, None], (height, width))], axis=-1)
    pixels[height // 4: height // 2, width // 3: width // 2] = rng.integers(150, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def write_record(out_dir: Path, stem: str, photo: Path | None, top: list[tuple[int, float]], methods=("gradcam",),
                 size=(60, 40), empty=False, bbox=None, extra=None, display=None) -> dict:
    """Overlays then the JSON record of one image, as the runner writes them. `top` is the ranked
    [(class index, score)]; the top-1 class is explained with each of `methods`."""
    width, height = size
    rgb = (np.asarray(Image.open(photo).convert("RGB")) if photo is not None
           else np.full((height, width, 3), 128, np.uint8))
    yy, xx = np.mgrid[0:height, 0:width]
    heatmap = np.zeros((height, width), np.float32) if empty else \
        np.exp(-((xx - width / 3) ** 2 + (yy - height / 3) ** 2) / (2 * (width / 5) ** 2)).astype(np.float32)
    explanations = []
    index, score = top[0]
    layout = Layout(out_dir)
    for method in methods:
        overlay = layout.relative(layout.map_paths(stem, method, index).overlay)
        picture = blend(rgb, heatmap, 0.5, colormap_lut("jet"))
        save_png(out_dir / overlay, picture)
        entry = {"method": method, "layer": "conv", "layers": ["conv"], "class_index": index, "label": LABELS[index],
                 "score": score, "overlay": overlay, "heatmap": None,
                 "peak": None if empty else [width // 3, height // 3], "raw_max": 0.0 if empty else 0.5,
                 "empty": empty}
        if bbox is not None:
            entry["bbox"] = bbox
        explanations.append(entry)
    record = records.image_record(
        image=display if display is not None else (str(photo) if photo is not None else f"{stem}.png"),
        width=width, height=height, model="tiny", layer="conv", layers=["conv"],
        predictions=[{"rank": r, "index": i, "label": LABELS[i], "score": s} for r, (i, s) in enumerate(top, 1)],
        explanations=explanations, fingerprint="sha256:fixture", pretrained=True,
    )
    record.update(extra or {})
    save_json(layout.record(stem), record)
    return record


def summary(images: int, failures: list[dict], shard=None) -> dict:
    """A summary record as the runner writes it (RunSummary.as_record)."""
    run = {"camcli_version": "0.1.0", "model": "tiny", "layer": "conv", "method": "gradcam", "methods": ["gradcam"],
           "classes": ["top1"], "pretrained": True, "fingerprint": "sha256:fixture"}
    return RunSummary(images=images, ok=images - len(failures), failures=failures, elapsed_seconds=1.0,
                      run=run).as_record(shard)


def make_output_folder(root: Path) -> tuple[Path, list[dict]]:
    """OUT with six explained images (two with awkward names, one empty map, one box, two methods on
    one) and one failure; the photos live in root/photos. Returns (OUT, the records)."""
    photos, out = root / "photos", root / "out"
    specs = [  # stem, top-k, methods, empty, bbox
        ("a/circle_1", [(0, 0.91), (1, 0.05)], ("gradcam",), False, [5, 4, 30, 20]),
        ("a/square_1", [(1, 0.72), (0, 0.20)], ("gradcam", "scorecam"), False, None),
        ("b/star_1", [(2, 0.55), (3, 0.40)], ("gradcam",), True, None),
        ("b/ring_1", [(3, 0.66), (2, 0.30)], ("gradcam",), False, None),
        ('odd/<b>&"quote\'s" #1', [(0, 0.33), (2, 0.31)], ("gradcam",), False, None),
        ("odd/ünïcødé 猫", [(2, 0.87), (0, 0.10)], ("gradcam",), False, [0, 0, 60, 40]),
    ]
    records = []
    for seed, (stem, top, methods, empty, bbox) in enumerate(specs):
        photo = write_photo(photos / f"{stem}.png", seed=seed)
        records.append(write_record(out, stem, photo, top, methods, empty=empty, bbox=bbox))
    failures = [{"image": str(photos / "broken <img>.jpg"), "error": "cannot identify image file"}]
    (out / "summary.json").write_text(json.dumps(summary(len(specs) + 1, failures)), "utf-8")
    return out, records
