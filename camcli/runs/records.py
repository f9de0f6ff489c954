"""The JSON camcli writes and reads back: the per-image record and the run summary, with one schema.

Image record (`<stem>.json`, written after the image's other files, so a record means the image is
complete):

    image, width, height          the input as the user named it, and its size in pixels
    output_width, output_height   the size of its pictures (smaller with --max-size); peak and
                                  bbox are always in original pixels
    model, layer, layers          what explained it
    predictions                   [{rank, index, label, score}], the top-k
    explanations                  one entry per (method, class): method, layer, layers, class_index,
                                  label, score, overlay, heatmap, peak, bbox, mask, panel, raw_max, empty,
                                  guided (the overlay is a guided method's gradient picture, not a
                                  blend) (file names relative to the output folder; null when not
                                  written);
                                  with --save-segmentation also segmentation (the method's label
                                  map) and segmentation_value (this map's pixel value in it)
    detections                    an object detector's (target box): every explained detection, best
                                  first: {index, class_index, label, score, logit, box, anchor}, box
                                  [x0, y0, x1, y1] in original pixels; each of its maps' entries has
                                  detection (its index) and box. predictions are then the best
                                  detections, and an image without detections has none of either
    segmentation                  with --save-segmentation: bg_threshold, refine, and per method
                                  {file, values: [{value, class_index, label}]}, value 0 the background
    camcli_version, fingerprint   who wrote it, and a digest of everything that shaped its outputs
    warning                       only with random weights

Summary (`summary.json`, `summary.K-of-N.json` for a shard): the run's settings and its counts:
images, ok (explained now or skipped as unchanged), failed, failures [{image, error}], skipped
(found complete and unchanged by --resume), recomputed (an earlier record whose fingerprint
differed, or whose files were missing), interrupted, stopped (why the run ended early, or null).

Everything here is plain JSON work; no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from camcli import __version__
from camcli.errors import CorruptSummaryError, MissingSummaryError, UsageError
from camcli.runs.files import save_json
from camcli.runs.layout import MAP_FILES, MAX_JSON_BYTES, Layout, read_json_object

RANDOM_WEIGHTS_WARNING = "random weights (`weights=none`): the predictions and maps are meaningless"

# Files an explanation entry may name, by whether the run was asked for them (layout.MAP_FILES).
MAP_FILE_KEYS = tuple(kind.key for kind in MAP_FILES)

# Summary fields that describe the run rather than count it; merged summaries take them from shard 1.
RUN_FIELDS = ("camcli_version", "model", "layer", "method", "methods", "classes", "target", "precision",
              "pretrained", "fingerprint")


def fingerprint(settings: Mapping) -> str:
    """A digest of everything that shapes an image's outputs (model, weights, layers, methods, classes,
    top-k, overlay, box and output options, camcli's version): equal settings, equal fingerprint."""
    text = json.dumps({**settings, "camcli_version": __version__}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- image records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """What every record of a run shares: the model and layers, and the run's fingerprint."""

    model: str
    layer: str
    layers: list[str]
    pretrained: bool
    fingerprint: str
    precision: str  # the step's compute dtype (camcli.options.PRECISIONS); the maps' arithmetic is float32
    target: dict | None = None  # what the maps explain (explainer.target_record), with the output's name


def image_record(identity: RunIdentity, *, image: str, width: int, height: int, predictions: list[dict],
                 explanations: list[dict], output_size: tuple[int, int] | None = None,
                 segmentation: dict | None = None, detections: list[dict] | None = None) -> dict:
    record = {
        "image": image,
        "width": width,
        "height": height,
        "output_width": (output_size or (width, height))[0],
        "output_height": (output_size or (width, height))[1],
        "model": identity.model,
        "layer": identity.layer,
        "layers": identity.layers,
        "target": identity.target or {"kind": "class"},
        "precision": identity.precision,
        "predictions": predictions,
        "explanations": explanations,
        "camcli_version": __version__,
        "fingerprint": identity.fingerprint,
    }
    if detections is not None:
        record["detections"] = detections
    if segmentation is not None:
        record["segmentation"] = segmentation
    if not identity.pretrained:
        record["warning"] = RANDOM_WEIGHTS_WARNING
    return record


def is_image_record(data, relative: str | None = None) -> bool:
    """A camcli image record; with `relative` (its path in the output folder, e.g. "a/cat.json"), also
    one whose overlays are named after it, as the runner writes them."""
    if not isinstance(data, dict) or not isinstance(data.get("image"), str) \
            or not isinstance(data.get("explanations"), list):
        return False
    if relative is None:
        return True
    prefix = relative[: -len(".json")] + "."
    return all(not isinstance(e, dict) or not isinstance(e.get("overlay"), str) or e["overlay"].startswith(prefix)
               for e in data["explanations"])


def scan_image_record(path: Path, relative: str) -> tuple[dict | None, str | None]:
    """(the record at `path`, None) for a camcli image record stored at `relative`; (None, None) for
    JSON that is not one (or a file too large to be one); (None, why) when the file cannot be read."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None, None
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:
        return None, f"cannot read {relative}: {error}"
    return (data, None) if is_image_record(data, relative) else (None, None)


def read_image_record(path: Path) -> dict | None:
    """The image record at `path`, or None when there is none (missing, unreadable, not a record)."""
    data = read_json_object(path)
    return data if is_image_record(data) else None


def pending_record(image: str, files: Iterable[str]) -> dict:
    """What an image's record path holds while its unmarked files (.npy heatmaps) are written: the
    files about to be written, so that a run killed in between can replace them when resumed. It is
    not an image record: a reader sees the image as not done, and the real record replaces it."""
    return {"image": image, "pending": list(files), "camcli_version": __version__}


def read_listed_files(path: Path, out_dir: Path) -> frozenset[str]:
    """Real paths of the files that the record at `path` names: an image record's, or a pending
    record's (what the previous run of this image wrote, or was writing when it was stopped)."""
    data = read_json_object(path)
    if is_image_record(data):
        return listed_files(data, out_dir)
    if isinstance(data, dict) and "camcli_version" in data and isinstance(data.get("pending"), list):
        return _real_paths(data["pending"], out_dir)
    return frozenset()


def listed_files(record: dict | None, out_dir: Path) -> frozenset[str]:
    """Real paths of the files a record names (what the previous run of this image wrote)."""
    if record is None:
        return frozenset()
    names = [entry.get(key) for entry in record.get("explanations", []) if isinstance(entry, dict)
             for key in MAP_FILE_KEYS]
    return _real_paths(names, out_dir)


def _real_paths(names, out_dir: Path) -> frozenset[str]:
    import os

    return frozenset(os.path.realpath(out_dir / name) for name in names if isinstance(name, str) and name)


def is_unchanged(record: dict | None, wanted_fingerprint: str, wanted_maps: set[tuple[str, int]] | None,
                 out_dir: Path, required: Iterable[str]) -> bool:
    """Whether an earlier record can stand for this run: same fingerprint, one map per wanted
    (method, class) when those are known, and every required file (MAP_FILE_KEYS) present. A record without
    maps stands only where none are wanted: an object detector's image with no detection."""
    if record is None or record.get("fingerprint") != wanted_fingerprint:
        return False
    try:
        explanations = record["explanations"]
        if not explanations and wanted_maps != set():
            return False
        if wanted_maps is not None and wanted_maps != {(e["method"], e["class_index"]) for e in explanations}:
            return False
        names = [e[key] for e in explanations for key in required]
    except (KeyError, TypeError):
        return False
    return all(isinstance(name, str) and name and (out_dir / name).is_file() for name in names)


# --- summaries -----------------------------------------------------------------------------------------


def is_run_summary(path: Path) -> bool:
    """A run's summary (an image named summary.png below the top of a folder gets a record of that name)."""
    data = read_json_object(path)
    return data is not None and "explanations" not in data and "failures" in data


def write_summary(path: Path, record: dict) -> None:
    save_json(path, record)


def read_summary_file(path: Path) -> dict:
    """A summary camcli wrote; MissingSummaryError when there is none, CorruptSummaryError when the
    file is not camcli's summary (unreadable, not JSON, or another program's file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingSummaryError(path)
    data = read_json_object(path)
    if data is None:
        raise CorruptSummaryError(path, "it is not a JSON object (corrupt, or not camcli's)")
    missing = [key for key in ("images", "ok", "failed", "failures") if key not in data]
    if missing or "camcli_version" not in data or not isinstance(data.get("failures"), list):
        raise CorruptSummaryError(path, f"it lacks camcli's fields ({', '.join(missing or ['camcli_version'])})")
    return data


def merged_summary(out_dir: Path) -> dict:
    """The run's summary: summary.json, or the shard summaries (summary.K-of-N.json) combined.

    A merged record lists `missing_shards`. MissingSummaryError when there is no summary at all;
    CorruptSummaryError for a summary that is not camcli's; UsageError when shards disagree on N.
    """
    layout = Layout(out_dir)
    shard_paths = layout.shard_summaries()
    if not shard_paths:
        return {**read_summary_file(layout.summary()), "missing_shards": []}
    shards = {key: read_summary_file(path) for key, path in shard_paths.items()}
    counts = {n for _, n in shards}
    if len(counts) != 1:
        raise UsageError(f"shard summaries in {out_dir} disagree on the shard count: {sorted(counts)}; remove the "
                         "summary.K-of-N.json files of the run that is not this one")
    (count,) = counts
    records = [shards[key] for key in sorted(shards)]
    elapsed = max(r.get("elapsed_seconds", 0.0) for r in records)  # shards run side by side
    ok = sum(r["ok"] for r in records)
    skipped = sum(r.get("skipped", 0) for r in records)
    stopped = [r["stopped"] for r in records if r.get("stopped")]
    return {
        **{key: records[0][key] for key in RUN_FIELDS if key in records[0]},
        "images": sum(r["images"] for r in records),
        "ok": ok,
        "failed": sum(r["failed"] for r in records),
        "failures": [failure for r in records for failure in r["failures"]],
        "elapsed_seconds": elapsed,
        "images_per_second": round((ok - skipped) / elapsed, 3) if elapsed else 0.0,
        "skipped": skipped,
        "recomputed": sum(r.get("recomputed", 0) for r in records),
        "interrupted": any(r.get("interrupted") for r in records),
        "stopped": stopped[0] if stopped else None,
        "shards": count,
        "missing_shards": [k for k in range(1, count + 1) if (k, count) not in shards],
    }
