"""`camcli audit` on an explain output folder: read its saved heatmaps, run SpRAy per class, write the results.

Input: the per-image records of an `explain` run (camcli.runs.records) whose maps were saved with
`--save-heatmap` (.npy next to the overlays). Output, in the same folder (camcli.runs.layout):
audit.json (every class, its clusters, their members, figures and flags), audit.csv (one row per
image) and audit.<class>.<cluster>.png (each cluster's mean map), each written atomically.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from camcli import __version__
from camcli.audit.rule import DEFAULT_RULE, FlagRule
from camcli.audit.spray import GRID, NEIGHBOURS, SAMPLES, SEED, ClassClusters, cluster_class, shrink, unit_rows
from camcli.errors import UsageError
from camcli.options import AuditOptions, FileOptions, field_default
from camcli.runs.files import save_json, save_png, write_bytes_atomic
from camcli.runs.layout import AUDIT_MAP, Layout, check_replaceable, is_camcli_csv, is_camcli_output

AUDIT_CSV_COLUMNS = ("image", "record", "class_index", "label", "truth", "cluster", "cluster_size", "cluster_share",
               "main", "flagged", "x", "y")
MEAN_MAP_SIDE = 128  # pixels of a cluster's mean-map picture
AUDIT_PICTURE_SIDE = 256  # the rule compares the images' pixels at this size (longest side), decoded reduced
CROPS, CROP_SIDE, CROP_SPAN = 8, 96, 0.3  # a flagged pile-up's crops: how many, their pixels, their share of the side


@dataclass
class AuditMap:
    """One image's map, as the audit uses it."""

    image: str  # the image's path, as its record gives it
    record: str  # the record's path in OUT
    overlay: str | None  # the overlay's path in OUT
    class_index: int
    label: str
    truth: str | None
    cells: np.ndarray  # (GRID, GRID), max 1 or all zero
    source: Path | None = None  # the image file, where it can still be read (the rule compares its pixels)

    def picture(self) -> np.ndarray | None:
        """The image as RGB, its longest side at most AUDIT_PICTURE_SIDE; None where it cannot be read."""
        from camcli.errors import CamcliError
        from camcli.runs.decode import decode_image

        if self.source is None:
            return None
        try:
            return np.asarray(decode_image(self.source, max_side=AUDIT_PICTURE_SIDE).picture)
        except (CamcliError, OSError, ValueError):
            return None


@dataclass
class FolderMaps:
    """The maps an audit reads from one folder, and what it could not use."""

    method: str
    layer: str | None
    model: str | None
    maps: list[AuditMap]
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many images
    problems: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


@dataclass
class AuditReport:
    """What `camcli audit` found; `record()` is audit.json."""

    folder: FolderMaps
    by: str
    rule: FlagRule
    neighbours: int
    classes: list[tuple[list[AuditMap], ClassClusters]]
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)
    explain_summary: object = None  # the explain run's RunSummary, when the audit explained the images
    report_path: Path | None = None
    interrupted: bool = False  # SIGINT or SIGTERM stopped the run: the maps audited are those explained so far

    @property
    def flagged(self) -> list[tuple[str, int]]:
        """(class label, cluster id) of every flagged cluster."""
        return [(maps[0].label, cluster.id) for maps, result in self.classes for cluster in result.clusters
                if cluster.flagged]

    def record(self, mean_maps: dict[tuple[int, int], str] | None = None,
               crops: dict[tuple[int, int], str] | None = None) -> dict:
        mean_maps = mean_maps or {}
        return {
            "camcli_version": __version__, "kind": "audit", "model": self.folder.model, "layer": self.folder.layer,
            "method": self.folder.method, "by": self.by, "grid": GRID, "neighbours": self.neighbours,
            "rule": self.rule.record(), "images": sum(len(maps) for maps, _ in self.classes),
            "flagged": len(self.flagged), "skipped": self.folder.skipped, "problems": self.folder.problems,
            "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
            "classes": [_class_record(maps, result, mean_maps, crops) for maps, result in self.classes],
        }


def _class_record(maps: list[AuditMap], result: ClassClusters, mean_maps: dict, crops: dict | None = None) -> dict:
    index = maps[0].class_index
    unit = unit_rows(np.stack([m.cells.ravel() for m in maps]).astype(np.float64))
    clusters = []
    for cluster in result.clusters:
        # the most typical members first: closest to the cluster's mean direction
        centre = unit[cluster.members].mean(axis=0)
        order = cluster.members[np.argsort(-(unit[cluster.members] @ centre), kind="stable")]
        clusters.append({
            "id": cluster.id, "size": len(cluster.members), "share": cluster.share, "main": cluster.main,
            "flagged": cluster.flagged, "reason": cluster.reason,
            "members": [maps[i].image for i in cluster.members],
            "samples": [maps[i].overlay for i in order[:SAMPLES] if maps[i].overlay],
            "mean_map": mean_maps.get((index, cluster.id)), "focus": cluster.focus,
            "border_share": cluster.border_share, "corner_share": cluster.corner_share,
            "rest_border_share": cluster.rest_border_share, "tightness": cluster.tightness,
            "peak_spread": cluster.peak_spread, "pattern": cluster.pattern,
            "pattern_compared": cluster.pattern_compared, "evidence": cluster.evidence,
            "purity": cluster.purity, "purity_label": cluster.purity_label,
        })
    return {
        "label": maps[0].label, "class_index": index, "images": len(maps), "eigenvalues": result.eigenvalues,
        "note": result.note, "members": [m.image for m in maps], "records": [m.record for m in maps],
        "overlays": [m.overlay for m in maps], "truth": [m.truth for m in maps],
        "embedding": None if result.embedding is None else result.embedding.tolist(),
        "cluster_of": result.cluster_of.tolist(), "clusters": clusters,
        "pile_ups": [{"members": [maps[i].image for i in pile.members], "place": list(pile.place),
                      "size": len(pile.members), "share": pile.share, "peak_spread": pile.peak_spread,
                      "pattern": pile.pattern, "pattern_compared": pile.pattern_compared, "evidence": pile.evidence,
                      "distinct": pile.distinct, "near": pile.near, "transfer": pile.transfer,
                      "flagged": pile.flagged, "reason": pile.reason, "reliance": pile.reliance,
                      "places": None if pile.marks is None else np.round(pile.marks, 4).tolist(),
                      "extent": None if pile.extent is None else [round(float(v), 4) for v in pile.extent],
                      "crops": (crops or {}).get((index, k))} for k, pile in enumerate(result.pile_ups)],
    }


# --- reading ------------------------------------------------------------------------------------------


def read_truth_labels(path: str | os.PathLike):
    """An image -> label lookup (camcli.models.extra_inputs.RowsByImage) from a CSV with `image` and
    `label` columns; one-line UsageError when it cannot be read."""
    from camcli.models.extra_inputs import RowsByImage

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read truth labels {path}: {error}; give a UTF-8 CSV with image,label columns") \
            from None
    reader = csv.DictReader(io.StringIO(text))
    if not {"image", "label"} <= set(reader.fieldnames or []):
        raise UsageError(f"{path}: its header must name an `image` and a `label` column "
                         f"(found {', '.join(reader.fieldnames or []) or 'none'})")
    rows = {}
    for row in reader:
        image, label = (row["image"] or "").strip(), (row["label"] or "").strip()
        if image in rows and rows[image] != label:
            raise UsageError(f"{path}, line {reader.line_num}: a second label for {image!r} ({label!r}, and "
                             f"{rows[image]!r} before); keep one row per image")
        rows[image] = label
    rows = {key: label for key, label in rows.items() if key and label}
    if not rows:
        raise UsageError(f"{path} has no rows with an image and a label")
    return RowsByImage(path, rows)


def _explanation_for(record: dict, method: str, by: str, truth: str | None) -> dict | None:
    """The record's map that the audit uses: its top-1 class's (by predicted) or its truth class's."""
    wanted = [e for e in record.get("explanations", []) if isinstance(e, dict) and e.get("method") == method]
    if by == "truth":
        return next((e for e in wanted if str(e.get("label", "")).casefold() == truth.casefold()), None)
    predictions = record.get("predictions") or [{}]
    top1 = predictions[0].get("index") if isinstance(predictions[0], dict) else None
    return next((e for e in wanted if e.get("class_index") == top1), None)


def _first_method(records: list[dict]) -> str | None:
    for record in records:
        for explanation in record.get("explanations", []):
            if isinstance(explanation, dict) and isinstance(explanation.get("method"), str):
                return explanation["method"]
    return None


def read_folder(out_dir: Path, method: str | None = None, by: str = field_default(AuditOptions, "by"),
                truth_labels=None,
                grid: int = GRID) -> FolderMaps:
    """The maps of every record in `out_dir` (a path or a string) for `method` (default: the first the records
    hold)."""
    from camcli.report.page import find_records

    out_dir = Path(out_dir)
    problems: list[str] = []
    records = find_records(out_dir, problems)
    if not records:
        raise UsageError(f"no image records in {out_dir}: give an output folder of `camcli explain` (run with "
                         "--save-heatmap), or the images themselves")
    if any("detections" in record for record in records):
        raise UsageError(f"the records in {out_dir} are an object detector's, one map per detection: the audit "
                         "clusters each class's maps, one per image, and does not apply to detections yet")
    method = method or _first_method(records)
    if not any(isinstance(e, dict) and e.get("method") == method for r in records for e in r["explanations"]):
        raise UsageError(f"the records in {out_dir} hold no {method} maps: choose a method they hold with --method")
    folder = FolderMaps(method, records[0].get("layer"), records[0].get("model"), [], problems=problems)
    jobs = []
    for record in records:
        truth = truth_labels.find(record["image"]) if truth_labels is not None else None
        if by == "truth" and truth is None:
            folder.skip("no truth label")
            continue
        explanation = _explanation_for(record, method, by, truth)
        if explanation is None:
            folder.skip(f"no {method} map of its {'truth' if by == 'truth' else 'top-1'} class")
        elif not explanation.get("heatmap"):
            folder.skip("no saved heatmap (explain with --save-heatmap)")
        else:
            jobs.append((record, explanation, truth))
    if jobs:
        folder.maps = _load_maps(out_dir, jobs, folder, grid)
    if not folder.maps:
        reasons = "; ".join(f"{count} {why}" for why, count in folder.skipped.items())
        raise UsageError(f"no usable maps in {out_dir} ({reasons}): explain the images with --save-heatmap, or "
                         "run `camcli audit` on the images")
    return folder


def _load_maps(out_dir: Path, jobs, folder: FolderMaps, grid: int) -> list[AuditMap]:
    def load(job):
        record, explanation, truth = job
        try:
            heatmap = np.load(out_dir / explanation["heatmap"], allow_pickle=False)
            cells = shrink(heatmap, grid)
        except (OSError, ValueError) as error:
            return f"cannot read {explanation['heatmap']}: {error}"
        peak = float(cells.max())
        cells = cells / peak if peak > 0 else cells
        source = Path(record["image"]) if isinstance(record.get("image"), str) else None
        return AuditMap(record["image"], record["_json"], explanation.get("overlay"),
                        int(explanation.get("class_index", -1)), str(explanation.get("label", "")), truth, cells,
                        source if source is not None and source.is_file() else None)

    # np.load and Pillow's resize release the GIL for their reading and filtering
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="camcli-audit") as pool:
        loaded = list(pool.map(load, jobs))
    for item in loaded:
        if isinstance(item, str):
            folder.problems.append(item)
            folder.skip("unreadable heatmap")
    return [item for item in loaded if isinstance(item, AuditMap)]


# --- the audit ----------------------------------------------------------------------------------------


def audit_maps(folder: FolderMaps, by: str = field_default(AuditOptions, "by"), rule: FlagRule = DEFAULT_RULE,
               neighbours: int = NEIGHBOURS, seed: int = SEED, embed: bool = True) -> AuditReport:
    """SpRAy per class over the folder's maps (grouped by predicted class, or by truth label)."""
    started = time.perf_counter()
    groups: dict[object, list[AuditMap]] = {}
    for item in folder.maps:
        groups.setdefault(item.truth if by == "truth" else item.class_index, []).append(item)
    ordered = [maps for _, maps in sorted(groups.items(), key=lambda kv: (kv[1][0].class_index, kv[1][0].label))]

    def audit_class(maps: list[AuditMap]) -> tuple[list[AuditMap], ClassClusters]:
        cells = np.stack([m.cells for m in maps])
        truth = [m.truth for m in maps] if any(m.truth is not None for m in maps) else None
        pictures = [m.picture for m in maps] if any(m.source is not None for m in maps) else None
        return maps, cluster_class(cells, truth, rule=rule, neighbours=neighbours, seed=seed, embed=embed,
                                   pictures=pictures)

    # One class per thread: t-SNE's gradient descent (most of the time) runs in compiled code that
    # releases the GIL, so the classes share the cores. Each class is seeded alone: same result.
    workers = max(1, min(os.cpu_count() or 1, len(ordered)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camcli-spray") as pool:
        classes = list(pool.map(audit_class, ordered))
    return AuditReport(folder, by, rule, neighbours, classes, seconds=time.perf_counter() - started)


def check_reliance_with(report: AuditReport, explainer, seed: int = SEED) -> None:
    """Ask the model about each class's flagged marks, pasted into the other classes' pictures and covered in
    their own (camcli.audit.spray.check_reliance)."""
    from camcli.audit.spray import check_reliance

    for k, (maps, result) in enumerate(report.classes):
        others = [m.picture for j, (other, _) in enumerate(report.classes) if j != k for m in other]
        check_reliance(result.pile_ups, result.clusters, explainer, [m.picture for m in maps], maps[0].class_index,
                       report.rule, seed, others)


def check_audit_files(out_dir: Path) -> None:
    """UsageError before any work when audit.json or audit.csv in `out_dir` is not camcli's."""
    layout = Layout(out_dir)
    header = ",".join(AUDIT_CSV_COLUMNS)
    check_replaceable(layout.audit_json)
    check_replaceable(layout.audit_csv, lambda p: is_camcli_csv(p, header))


def _mean_map_picture(mean_map: np.ndarray, lut: np.ndarray) -> np.ndarray:
    picture = Image.fromarray(np.rint(np.clip(mean_map, 0, 1) * 255).astype(np.uint8), mode="L")
    picture = picture.resize((MEAN_MAP_SIDE, MEAN_MAP_SIDE), Image.BILINEAR)
    return lut[np.asarray(picture)]


def write_audit(report: AuditReport, out_dir: Path, colormap: str = field_default(FileOptions, "colormap")
                ) -> dict[str, Path]:
    """audit.json, audit.csv and the mean maps in `out_dir`, atomically; stale mean maps of an earlier
    audit (camcli's, no longer listed) are removed."""
    from camcli.maps.overlay import colormap_lut

    layout = Layout(out_dir)
    check_audit_files(out_dir)
    lut = colormap_lut(colormap)
    mean_maps = {}
    for maps, result in report.classes:
        for cluster in result.clusters:
            path = layout.audit_map(maps[0].class_index, cluster.id)
            check_replaceable(path, is_camcli_output)
            save_png(path, _mean_map_picture(cluster.mean_map, lut))
            mean_maps[(maps[0].class_index, cluster.id)] = layout.relative(path)
    crops = {}
    for maps, result in report.classes:
        for k, pile in enumerate(result.pile_ups):
            if not pile.flagged:
                continue
            shown = pile.best_carriers(CROPS)
            strip = crops_strip([maps[pile.members[j]] for j in shown], [pile.place_of(j) for j in shown])
            if strip is not None:
                path = layout.audit_crops(maps[0].class_index, k)
                check_replaceable(path, is_camcli_output)
                save_png(path, strip)
                crops[(maps[0].class_index, k)] = layout.relative(path)
    _remove_stale_maps(out_dir, set(mean_maps.values()) | set(crops.values()))
    save_json(layout.audit_json, report.record(mean_maps, crops))
    write_bytes_atomic(layout.audit_csv, audit_csv_text(report).encode("utf-8"))
    report.paths = {"json": layout.audit_json, "csv": layout.audit_csv}
    return report.paths


def crops_strip(members: list[AuditMap], places: list[tuple[float, float]]) -> np.ndarray | None:
    """The members' pictures around their places (x, y fractions, one per member), CROP_SIDE pixels each, side
    by side, so that a person sees the repeated pattern; None when no picture can be read."""
    tiles = []
    for member, place in zip(members, places, strict=True):
        picture = member.picture()
        if picture is None:
            continue
        height, width = picture.shape[:2]
        half = max(2, round(CROP_SPAN * min(width, height) / 2))
        x, y = round(place[0] * width), round(place[1] * height)
        left, top = min(max(0, x - half), max(0, width - 2 * half)), min(max(0, y - half), max(0, height - 2 * half))
        crop = Image.fromarray(np.ascontiguousarray(picture[top:top + 2 * half, left:left + 2 * half, :3]))
        tiles.append(np.asarray(crop.resize((CROP_SIDE, CROP_SIDE), Image.Resampling.BILINEAR)))
    if not tiles:
        return None
    gap = np.full((CROP_SIDE, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def _remove_stale_maps(out_dir: Path, keep: set[str]) -> None:
    for name in os.listdir(out_dir):
        path = out_dir / name
        if AUDIT_MAP.fullmatch(name) and name not in keep and is_camcli_output(path):
            path.unlink(missing_ok=True)


def audit_csv_text(report: AuditReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_CSV_COLUMNS)
    for maps, result in report.classes:
        by_id = {cluster.id: cluster for cluster in result.clusters}
        for i, item in enumerate(maps):
            cluster = by_id[int(result.cluster_of[i])]
            x, y = result.embedding[i] if result.embedding is not None else ("", "")
            writer.writerow([item.image, item.record, item.class_index, item.label, item.truth or "", cluster.id,
                             len(cluster.members), cluster.share, int(cluster.main), int(cluster.flagged), x, y])
    return buffer.getvalue()


def format_audit_table(report: AuditReport) -> str:
    """One line per cluster: class, cluster, size, share, tightness, border share (against the rest of
    the class), corner share, focus, and FLAGGED."""
    lines = [f"{'class':<16} {'cluster':>7} {'size':>5} {'share':>6} {'tight':>6} {'border':>6} {'rest':>6} "
             f"{'corner':>6} {'focus':>6}  flag"]
    for maps, result in report.classes:
        for cluster in result.clusters:
            rest = "-" if cluster.rest_border_share is None else f"{cluster.rest_border_share:.2f}"
            lines.append(f"{maps[0].label[:16]:<16} {cluster.id:>7} {len(cluster.members):>5} {cluster.share:>6.2f} "
                         f"{cluster.tightness:>6.2f} {cluster.border_share:>6.2f} {rest:>6} "
                         f"{cluster.corner_share:>6.2f} {cluster.focus:>6.2f}  "
                         f"{'FLAGGED' if cluster.flagged else ''}")
    return "\n".join(lines)


def flagged_lines(report: AuditReport) -> list[str]:
    return [f"flagged: class {maps[0].label!r}, cluster {cluster.id} ({len(cluster.members)} images): "
            f"{cluster.reason}" for maps, result in report.classes for cluster in result.clusters if cluster.flagged]


def is_explain_folder(path: Path) -> bool:
    """A folder an `explain` run wrote: it has a run summary (whole or sharded)."""
    from camcli.runs.records import is_run_summary

    layout = Layout(path)
    return path.is_dir() and (is_run_summary(layout.summary()) or bool(layout.shard_summaries()))


def flagged_members(report: AuditReport, label: str | None = None) -> Sequence[str]:
    """The images the audit flags, of class `label` or of every class (benchmarks): those of the flagged
    pile-ups where the images could be read, else those of the flagged clusters (the border rule)."""
    found = []
    for maps, result in report.classes:
        if label is not None and maps[0].label != label:
            continue
        if result.pile_ups or not any(cluster.flagged for cluster in result.clusters):
            found += [maps[i].image for pile in result.pile_ups if pile.flagged for i in pile.members]
        else:
            found += [maps[i].image for cluster in result.clusters if cluster.flagged for i in cluster.members]
    return found
