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
        overlay = layout.relative(layout.map_paths(stem, method, index)["overlay"])
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
        records.RunIdentity("tiny", "conv", ["conv"], True, "sha256:fixture", "float32"),
        image=display if display is not None else (str(photo) if photo is not None else f"{stem}.png"),
        width=width, height=height,
        predictions=[{"rank": r, "index": i, "label": LABELS[i], "score": s} for r, (i, s) in enumerate(top, 1)],
        explanations=explanations,
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


# --- camcli audit's files -------------------------------------------------------------------------

ODD_STEM = 'imgs/odd <&"q\'s"> circle'  # a member whose path needs escaping everywhere


def _audit_class(out: Path, label: str, class_index: int, clusters: list[dict], with_records: bool) -> dict:
    """One class of audit.json, and its files: an overlay (and record) per member, a mean map per cluster.
    `clusters`: [{"stems", "flagged", "reason", "figures"}], the first one the class's main strategy."""
    layout = Layout(out)
    members, overlays, embedding, cluster_of, entries = [], [], [], [], []
    for cluster_id, spec in enumerate(clusters):
        cluster_members, cluster_overlays = [], []
        for k, stem in enumerate(spec["stems"]):
            if with_records:
                write_record(out, stem, None, [(class_index, 0.9)])
            else:
                save_png(layout.map_paths(stem, "gradcam", class_index)["overlay"],
                         np.full((40, 40, 3), 60 * cluster_id + 40, np.uint8))
            overlay = layout.relative(layout.map_paths(stem, "gradcam", class_index)["overlay"])
            cluster_members.append(f"{stem}.png")
            cluster_overlays.append(overlay)
            # clusters far apart in the embedding, members on a small circle around each centre
            angle = 2 * np.pi * k / len(spec["stems"])
            embedding.append([round(0.2 + 0.6 * cluster_id + 0.1 * np.cos(angle), 4),
                              round(0.3 + 0.4 * cluster_id + 0.1 * np.sin(angle), 4)])
            cluster_of.append(cluster_id)
        members += cluster_members
        overlays += cluster_overlays
        mean_map = layout.audit_map(class_index, cluster_id)
        ramp = np.linspace(0, 255, 32, dtype=np.uint8)
        save_png(mean_map, np.stack([np.broadcast_to(ramp, (32, 32)), np.full((32, 32), 80, np.uint8),
                                     np.broadcast_to(ramp[:, None], (32, 32))], axis=-1))
        entries.append({"id": cluster_id, "size": len(spec["stems"]), "share": None, "main": cluster_id == 0,
                        "flagged": spec.get("flagged", False),
                        "reason": spec.get("reason", "the class's main strategy"),
                        "members": cluster_members, "samples": cluster_overlays[:6],
                        "mean_map": layout.relative(mean_map), "purity": None, "purity_label": None,
                        **spec.get("figures", {})})
    for entry in entries:
        entry["share"] = round(entry["size"] / len(members), 4)
    return {"label": label, "class_index": class_index, "images": len(members),
            "eigenvalues": [0.0, 0.01, 0.4], "members": members,
            "records": [m.removesuffix(".png") + ".json" for m in members], "overlays": overlays,
            "embedding": embedding, "cluster_of": cluster_of, "clusters": entries}


def make_audit_folder(root: Path, with_records: bool = True) -> tuple[Path, dict]:
    """OUT with audit.json as `camcli audit` writes it: class "square" (one cluster, nothing flagged)
    listed before class "circle" (a main cluster of 9 and a flagged one of 3 in the corners, one member
    with `<&"'>` in its path), every overlay and mean map a real camcli PNG; with the image records
    of `camcli explain` too unless `with_records` is False. Returns (OUT, the audit record)."""
    out = root / "out"
    square = _audit_class(out, "square", 1, [
        {"stems": [f"imgs/clean_square_{i:03d}" for i in range(5)],
         "figures": {"focus": 0.4, "border_share": 0.2, "corner_share": 0.05, "tightness": 0.7, "purity": 1.0,
                     "purity_label": "square"}}], with_records)
    circle = _audit_class(out, "circle", 0, [
        {"stems": [ODD_STEM] + [f"imgs/clean_circle_{i:03d}" for i in range(8)],
         "figures": {"focus": 0.31, "border_share": 0.22, "corner_share": 0.06, "tightness": 0.81, "purity": 0.95,
                     "purity_label": "circle"}},
        {"stems": [f"imgs/tagged_circle_{i:03d}" for i in range(3)], "flagged": True,
         "reason": "small (25% of the class), tight (0.74), its mass sits in the corners (0.61 against 0.06 "
                   "for the main strategy)",
         "figures": {"focus": 0.12, "border_share": 0.7, "corner_share": 0.61, "tightness": 0.74}}], with_records)
    audit = {"camcli_version": "0.1.0", "kind": "audit", "model": "demo-cheat", "layer": "conv6", "method": "gradcam",
             "by": "predicted", "grid": 32, "neighbours": 10, "images": 17, "flagged": 1,
             "rule": {"max_share": 0.25, "min_tightness": 0.5, "min_away": 0.3}, "classes": [square, circle]}
    save_json(Layout(out).audit_json, audit)
    return out, audit


def add_small_classes(out: Path, audit: dict, labels: list[str], images: int = 1, flagged: bool = False) -> list[dict]:
    """Append to `audit` (and write) classes with too few maps for SpRAy to look for strategies in, as
    `camcli audit` writes them: eigenvalues [], a note, one cluster holding every member, no embedding
    under 5 distinct maps, its mean map on disk; the class indices follow the fixture's. Returns them."""
    layout = Layout(out)
    added = []
    for offset, label in enumerate(labels):
        index = 10 + len(audit["classes"]) + offset
        stems = [f"few/{label}_{i}" for i in range(images)]
        overlays = []
        for stem in stems:
            overlay = layout.map_paths(stem, "gradcam", index)["overlay"]
            save_png(overlay, np.full((40, 40, 3), 90, np.uint8))
            overlays.append(layout.relative(overlay))
        mean_map = layout.audit_map(index, 0)
        save_png(mean_map, np.full((32, 32, 3), 200, np.uint8))
        added.append({
            "label": label, "class_index": index, "images": images, "eigenvalues": [],
            "note": f"{images} maps: too few to find strategies (at least 12); one cluster",
            "members": [f"{stem}.png" for stem in stems], "overlays": overlays, "embedding": None,
            "cluster_of": [0] * images,
            "clusters": [{"id": 0, "size": images, "share": 1.0, "main": True, "flagged": flagged,
                          "reason": "the only cluster of the class: nothing to compare with",
                          "members": [f"{stem}.png" for stem in stems], "samples": overlays[:6],
                          "mean_map": layout.relative(mean_map), "focus": 0.2, "border_share": 0.1,
                          "corner_share": 0.03, "rest_border_share": None, "tightness": 1.0, "purity": None,
                          "purity_label": None}]})
    audit["classes"] += added
    audit["images"] += images * len(labels)
    save_json(layout.audit_json, audit)
    return added


def sanity_record() -> dict:
    """sanity.json as `camcli audit` writes it: gradcam passes, guidedbackprop does not."""
    return {"camcli_version": "0.1.0", "kind": "sanity", "model": "demo", "layer": "conv6", "class": "top1",
            "images": ["a.png", "b.png", "c.png"], "seed": 0, "threshold": 0.5,
            "depths": ["none", "predictions", "dense_1", "conv6", "conv5"],
            "methods": {"gradcam": {"spearman": [1.0, 0.41, 0.12, -0.05, 0.02],
                                    "spearman_abs": [1.0, 0.43, 0.15, 0.08, 0.03],
                                    "ssim": [1.0, 0.52, 0.2, 0.1, 0.07], "score": 0.93, "passed": True},
                        "guidedbackprop": {"spearman": [1.0, 0.97, 0.95, 0.9, 0.88],
                                           "spearman_abs": [1.0, 0.97, 0.95, 0.91, 0.89],
                                           "ssim": [1.0, 0.9, 0.88, 0.86, 0.85], "score": 0.1, "passed": False}},
            "seconds": 12.3}
