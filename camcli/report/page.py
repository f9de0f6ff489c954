"""`OUT/index.html`: one self-contained page for a finished (or sharded, or partial) run.

The page is built from what a run leaves in OUT: the per-image JSON records (found by walking OUT),
the failures from summary.json or the shard summaries, evaluation.json when there is one, and
`camcli audit`'s audit.json and sanity.json (read by camcli.report.audit_files, shown by
camcli.report.audit_sections). It uses no network: CSS and JavaScript are inline, and pictures are
small JPEG thumbnails written next to the outputs (`cat.thumb.jpg` for the original,
`cat.gradcam.285.thumb.jpg` per overlay), loaded lazily, so a run of 10,000 images gives a page that
opens quickly. Clicking a thumbnail shows the full-size picture. Filters (top-1 class, method, empty
maps) and sorting run in plain JavaScript over `data-*` attributes of the cards. A map's box is drawn
over its overlay, except on a guided method's gradient picture, where it would mark nothing the picture
shows (guided backprop's bbox bounds a patch of gradient edges, guided Grad-CAM's is its Grad-CAM map's).

Everything taken from JSON is escaped: file names may hold `<`, `&`, quotes, any Unicode, and even
undecodable bytes (kept as lone surrogates, see camcli.runs.discovery). No TensorFlow is imported here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from PIL import Image, ImageOps

from camcli import __version__
from camcli.errors import MissingSummaryError, UsageError
from camcli.report.audit_files import Audit, Sanity, read_audit, read_object, read_sanity
from camcli.report.audit_sections import audit_html, sanity_html
from camcli.report.markup import cell, esc, inside, is_scalar, number, url
from camcli.runs.files import save_jpeg, write_bytes_atomic
from camcli.runs.layout import (
    HTML_GENERATOR,
    MAP_FILES,
    REPORT_NAME,
    RUN_FILE,
    TEMP_PREFIX,
    THUMB_SUFFIX,
    Layout,
    check_replaceable,
    may_replace,
    thumbnail_path,
)
from camcli.runs.records import is_run_summary, merged_summary, scan_image_record

THUMB_SIDE = 256  # longest side of a thumbnail, in pixels


@dataclass
class ReportData:
    """Everything the page shows, read from an output folder."""

    records: list[dict] = field(default_factory=list)  # per-image records, each with "_json" (its path in OUT)
    failures: list[dict] = field(default_factory=list)  # [{"image", "error"}]
    summary: dict | None = None  # summary.json, or the shard summaries merged
    evaluation: dict | None = None
    audit: Audit | None = None  # audit.json, checked
    sanity: Sanity | None = None  # sanity.json, checked
    problems: list[str] = field(default_factory=list)  # missing shards, unreadable files...


# --- reading OUT ----------------------------------------------------------------------------------


def find_records(out_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """The per-image records under `out_dir` (JSON objects with "image" and "explanations" whose
    overlays are named after the record, as the runner writes them), in path order; each gets
    "_json", its path relative to `out_dir`. A subfolder with a run summary of its own is another
    run's output folder and is left out. Unreadable .json files are noted in `problems`; JSON files
    that are not records are skipped silently."""
    out_dir = Path(out_dir)
    records = []
    for folder, dirs, names in os.walk(out_dir):
        dirs.sort()
        top = Path(folder) == out_dir
        if not top and any(RUN_FILE.fullmatch(name) and is_run_summary(Path(folder, name)) for name in names
                           if name.startswith("summary")):
            dirs.clear()
            continue
        for name in sorted(names):
            if not name.endswith(".json") or name.startswith(TEMP_PREFIX) or (top and RUN_FILE.fullmatch(name)):
                continue
            path = Path(folder, name)
            relative = path.relative_to(out_dir).as_posix()
            record, problem = scan_image_record(path, relative)
            if problem is not None and problems is not None:
                problems.append(problem)
            if record is not None:
                record["_json"] = relative
                records.append(record)
    return records


def read_run_summary(out_dir: Path, problems: list[str]) -> dict | None:
    """summary.json, or the shard summaries merged (camcli.runs.records.merged_summary); None when there
    is none. Missing shards and unreadable summaries are noted in `problems`, never raised."""
    try:
        merged = merged_summary(out_dir)
    except MissingSummaryError:
        return None
    except UsageError as error:
        problems.append(str(error))
        return None
    except (OSError, ValueError) as error:
        problems.append(f"cannot read summary.json: {error}")
        return None
    count = merged.get("shards")
    for k in merged.get("missing_shards", []):
        problems.append(f"shard {k} of {count} has no summary (summary.{k}-of-{count}.json is missing): "
                        "its images and failures are not listed")
    return merged


def read_evaluation(out_dir: Path, problems: list[str]) -> dict | None:
    return read_object(Layout(out_dir).evaluation_json, problems)


def load_report_data(out_dir: Path) -> ReportData:
    """Read an output folder; UsageError when it holds no camcli outputs at all."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a folder; give an output folder of `camcli explain`")
    data = ReportData()
    data.records = find_records(out_dir, data.problems)
    data.summary = read_run_summary(out_dir, data.problems)
    data.evaluation = read_evaluation(out_dir, data.problems)
    data.audit = read_audit(out_dir, data.problems)
    data.sanity = read_sanity(out_dir, data.problems)
    layout = Layout(out_dir)
    if not data.records and data.summary is None and data.evaluation is None \
            and not layout.audit_json.is_file() and not layout.sanity_json.is_file():
        raise UsageError(f"no camcli outputs in {out_dir} (no image records, no summary.json, no evaluation.json); "
                         f"run `camcli explain IMAGES --out {out_dir}` first")
    # An `evaluate` run in its own folder has no summary.json: its failures are in evaluation.json.
    source = data.summary if data.summary is not None else data.evaluation or {}
    failures = source.get("failures", [])
    data.failures = [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []
    return data


# --- thumbnails -----------------------------------------------------------------------------------


def ensure_thumbnail(source: Path, thumb: Path, side: int = THUMB_SIDE) -> bool:
    """Write `thumb`, a JPEG of `source` with its longest side at most `side`, unless it exists and is
    not older than `source`. False when `source` cannot be read (the page then shows no picture)."""
    try:
        source_time = source.stat().st_mtime_ns
    except OSError:
        return False
    try:
        if thumb.stat().st_mtime_ns >= source_time:
            return True
    except OSError:
        pass  # no thumbnail yet
    try:
        with Image.open(source) as image:
            image.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size, much faster
            image = ImageOps.exif_transpose(image)  # upright, as camcli explained it
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
            image = image.convert("RGB")
            image.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        save_jpeg(thumb, image, quality=82)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _original_source(record: dict) -> Path | None:
    """The original image: the record's "image", the path as given to camcli (so relative to where
    camcli ran); None when it is not a file from here."""
    value = record.get("image")
    try:
        return Path(value) if isinstance(value, str) and value and Path(value).is_file() else None
    except (OSError, ValueError):
        return None


# --- HTML -----------------------------------------------------------------------------------------


def _score(score: float | None) -> str:
    """0.812; tiny scores in scientific notation rather than a misleading 0.000."""
    if score is None:
        return ""
    return f"{score:.3f}" if score == 0 or abs(score) >= 0.001 else f"{score:.1e}"


def _bbox_style(bbox, width, height) -> str | None:
    """CSS placing [x0, y0, x1, y1] (original pixels, x1/y1 exclusive) over a picture, in percent."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    values = [number(v) for v in bbox]
    width, height = number(width), number(height)
    if None in values or not width or not height:
        return None
    x0, y0, x1, y1 = values

    def percent(value, total):
        return min(max(value / total * 100.0, 0.0), 100.0)

    left, top = percent(x0, width), percent(y0, height)
    right, bottom = percent(x1, width), percent(y1, height)
    if right <= left or bottom <= top:
        return None
    return f"left:{left:.2f}%;top:{top:.2f}%;width:{right - left:.2f}%;height:{bottom - top:.2f}%"


_GUIDED_NOTE = ("a gradient picture, not a heatmap over the image: no box is drawn on it (guided backprop's bbox "
               "bounds a patch of gradient edges, guided Grad-CAM's is its Grad-CAM map's)")


@dataclass
class _Picture:
    href: str  # the full-size picture, relative to OUT
    thumb: str | None  # its thumbnail, relative to OUT; None when it could not be made


def _card(record: dict, pictures: dict, out_dir: Path) -> str:
    """One image's card: thumbnails, top-k table, badges; data-* attributes for the filters."""
    name = record["image"]
    predictions = [p for p in record.get("predictions") or [] if isinstance(p, dict)]
    top1 = predictions[0] if predictions else {}
    top1_label = str(top1.get("label", top1.get("index", "")))
    top1_score = number(top1.get("score"))
    width, height = record.get("width"), record.get("height")
    ratio = f"{width} / {height}" if number(width) and number(height) else "1 / 1"
    explanations = [e for e in record["explanations"] if isinstance(e, dict)]
    any_empty = any(e.get("empty") is True for e in explanations)

    parts = [f'<article class="card" data-name="{esc(name)}" data-top1="{esc(top1_label)}" '
             f'data-score="{top1_score if top1_score is not None else -1}" data-empty="{int(any_empty)}">',
             f'<h2 title="{esc(name)}">{esc(name)}</h2>']
    badges = []
    if record.get("warning"):
        badges.append(f'<span class="badge warn" title="{esc(record["warning"])}">random weights</span>')
    if any_empty:
        badges.append('<span class="badge empty">empty map</span>')
    model = f'{esc(record.get("model", ""))} \u00b7 {esc(record.get("layer", ""))}'
    parts.append(f'<p class="meta">{model} \u00b7 {esc(width)}\u00d7{esc(height)} {"".join(badges)}</p>')

    parts.append('<div class="thumbs">')
    original = pictures.get(("original", record["_json"]))
    if original is not None and original.thumb:
        parts.append(f'<figure class="thumb"><a class="zoom" href="{url(original.href)}" '
                     f'data-caption="{esc(name)} (original)"><span class="frame" style="aspect-ratio:{ratio}">'
                     f'<img loading="lazy" src="{url(original.thumb)}" alt="original"></span></a>'
                     '<figcaption>original</figcaption></figure>')
    for explanation in explanations:
        parts.append(_overlay_figure(explanation, pictures, out_dir, name, width, height, ratio))
    parts.append("</div>")

    if predictions:
        explained = {e.get("class_index") for e in explanations}
        rows = []
        for p in predictions:
            score = number(p.get("score"))
            bar = min(max(score or 0.0, 0.0), 1.0) * 100
            mark = ' class="explained"' if p.get("index") in explained else ""
            rows.append(f'<tr{mark}><td>{esc(p.get("rank", ""))}</td><td>{esc(p.get("label", ""))}</td>'
                        f'<td class="num">{esc(p.get("index", ""))}</td>'
                        f'<td class="num">{_score(score)}</td>'
                        f'<td class="bar"><span style="width:{bar:.1f}%"></span></td></tr>')
        parts.append('<table class="topk"><thead><tr><th>#</th><th>class</th><th>index</th><th>score</th><th></th>'
                     f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    parts.append("</article>")
    return "".join(parts)


def _overlay_figure(explanation: dict, pictures: dict, out_dir: Path, name, width, height, ratio) -> str:
    method = str(explanation.get("method", ""))
    label = explanation.get("label", explanation.get("class_index", ""))
    score = number(explanation.get("score"))
    layers = explanation.get("layers") if isinstance(explanation.get("layers"), list) else []
    layer_text = " + ".join(map(str, layers)) if len(layers) > 1 else str(explanation.get("layer") or "")
    empty = explanation.get("empty") is True
    caption = f"{label} \u00b7 {method}" + (f" \u00b7 {score:.3f}" if score is not None else "")
    if isinstance(explanation.get("detection"), int):  # a detector's map: which detection (its box is drawn in)
        caption = f"detection {explanation['detection']}: {caption}"
    full_caption = f"{name}: {caption} at {layer_text}"
    picture = pictures.get(("overlay", explanation.get("overlay")))
    parts = [f'<figure class="thumb" data-method="{esc(method)}" data-empty="{int(empty)}" '
             f'title="{esc(full_caption)}">']
    guided = explanation.get("guided") is True  # the record says the overlay is a gradient picture
    if picture is not None and picture.thumb:
        # No box on a gradient picture: the box was measured on another map than the one shown (the
        # gradient's magnitude, whose largest region is a patch of edges, or a Grad-CAM map), so it marks
        # nothing the reader can see there.
        box = None if guided else _bbox_style(explanation.get("bbox"), width, height)
        box_html = f'<span class="box" style="{box}"></span>' if box else ""
        parts.append(f'<a class="zoom" href="{url(picture.href)}" data-caption="{esc(full_caption)}">'
                     f'<span class="frame" style="aspect-ratio:{ratio}"><img loading="lazy" '
                     f'src="{url(picture.thumb)}" alt="{esc(caption)}">{box_html}</span></a>')
    else:
        parts.append(f'<span class="frame missing" style="aspect-ratio:{ratio}">overlay missing</span>')
    extras = []
    if guided:
        extras.append(f'<span class="badge" title="{_GUIDED_NOTE}">gradients</span>')
    if empty:
        extras.append('<span class="badge empty">empty map</span>')
    if len(layers) > 1:
        extras.append(f'<span class="badge" title="{esc(layer_text)}">{len(layers)} layers</span>')
    links = []
    for kind in MAP_FILES:  # every file of the map with a link (its picture is shown), as the record names it
        name = explanation.get(kind.key) if kind.link else None
        if isinstance(name, str) and inside(out_dir, name) is not None:
            links.append(f'<a href="{url(name)}">{kind.link}</a>')
    parts.append(f'<figcaption>{esc(caption)} {"".join(extras)}'
                 f'{" <span class=links>" + " ".join(links) + "</span>" if links else ""}</figcaption></figure>')
    return "".join(parts)


def _flat(values: dict) -> dict:
    """A mapping's scalar fields, with those of its nested mappings (one level) raised beside them."""
    flat = {}
    for key, value in values.items():
        if is_scalar(value):
            flat.setdefault(key, value)
        elif isinstance(value, dict):
            for inner, inner_value in value.items():
                if is_scalar(inner_value):
                    flat.setdefault(inner, inner_value)
    return flat


def _table(rows: list[tuple[str, dict]], first: str) -> str:
    """A table with one row per (name, fields) and a column per field name met, in order."""
    columns: list[str] = []
    for _, fields in rows:
        columns += [key for key in fields if key not in columns]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(f"<tr><th>{esc(name)}</th>" + "".join(f"<td>{esc(cell(fields.get(c)))}</td>" for c in columns)
                   + "</tr>" for name, fields in rows)
    return f'<table class="grid"><thead><tr><th>{esc(first)}</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _key_values(fields: dict) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(cell(v))}</td></tr>" for k, v in fields.items())
    return f'<table class="grid"><tbody>{body}</tbody></table>'


_MAX_LIST_ROWS = 100  # longer lists in evaluation.json (per-image rows) are counted, not shown


def _evaluation_html(evaluation: dict) -> str:
    """evaluation.json, whatever its exact schema: a methods x metrics table when it has a "methods"
    mapping (nested metric mappings are flattened), its top-level scalars, short lists of objects
    as tables, and the length of long ones."""
    parts = ['<section id="evaluation"><h2>Evaluation</h2>']
    methods = evaluation.get("methods")
    if isinstance(methods, dict) and methods:
        rows = [(name, _flat(values) if isinstance(values, dict) else {"value": values})
                for name, values in methods.items()]
        parts.append(_table(rows, "method"))
    scalars = {k: v for k, v in evaluation.items() if is_scalar(v)}
    if scalars:
        parts.append(_key_values(scalars))
    for key, value in evaluation.items():
        if key == "methods" or is_scalar(value):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) \
                and len(value) <= _MAX_LIST_ROWS:
            parts.append(f"<h3>{esc(key)}</h3>" + _table([(str(i), _flat(v)) for i, v in enumerate(value, 1)], "#"))
        elif isinstance(value, list):
            parts.append(f'<p class="facts">{esc(key)}: {len(value)} entries (see evaluation.json)</p>')
        elif isinstance(value, dict) and value:
            parts.append(f"<details><summary>{esc(key)}</summary>"
                         + _key_values(_flat(value)) + "</details>")
    parts.append("</section>")
    return "".join(parts)


def _failures_html(failures: list[dict]) -> str:
    if not failures:
        return ""
    rows = "".join(f'<tr><td>{esc(f.get("image", ""))}</td><td>{esc(f.get("error", ""))}</td></tr>'
                   for f in failures)
    return (f'<section id="failures"><h2>Failures ({len(failures)})</h2><table class="grid"><thead><tr><th>image</th>'
            f"<th>error</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _header_html(data: ReportData, title: str) -> str:
    summary = data.summary or {}
    first = data.records[0] if data.records else {}
    facts = []
    for key in ("model", "layer", "method"):
        value = summary.get(key, first.get(key))
        if value is not None:
            facts.append(f"{key} <b>{esc(cell(value))}</b>")
    facts.append(f"<b>{len(data.records)}</b> images explained")
    facts.append(f"<b>{len(data.failures)}</b> failed")
    if summary.get("shards"):
        facts.append(f"{summary['shards']} shards")
    notes = list(data.problems)
    if summary.get("interrupted"):
        notes.append("the run was interrupted: some images were never explained")
    if summary.get("warning"):
        notes.append(str(summary["warning"]))
    notes_html = "".join(f'<p class="problem">{esc(note)}</p>' for note in notes)
    facts_html = " &middot; ".join(facts)
    return f'<header><h1>{esc(title)}</h1><p class="facts">{facts_html}</p>{notes_html}</header>'


def _contents_html(data: ReportData) -> str:
    """A line of links to the page's sections, each with its verdict, when it has more than the images."""
    links = []
    if data.sanity is not None:
        failed = sum(m.passed is False for m in data.sanity.methods)
        verdict = f"{failed} of {len(data.sanity.methods)} methods failed" if failed else \
            f"{sum(m.passed is True for m in data.sanity.methods)} of {len(data.sanity.methods)} methods passed"
        links.append(f'<a href="#sanity">Sanity check</a> ({verdict})')
    if data.evaluation is not None:
        links.append('<a href="#evaluation">Evaluation</a>')
    if data.audit is not None:
        flagged = data.audit.facts.get("flagged", sum(c.flagged for k in data.audit.classes for c in k.clusters))
        links.append(f'<a href="#audit">Audit</a> ({esc(cell(flagged))} flagged)')
    if data.failures:
        links.append(f'<a href="#failures">Failures</a> ({len(data.failures)})')
    if not links:
        return ""
    if data.records:
        links.append(f'<a href="#cards">Images</a> ({len(data.records)})')
    return f'<nav id="contents" class="facts">on this page: {" &middot; ".join(links)}</nav>'


def _controls_html(records: list[dict]) -> str:
    classes: dict[str, int] = {}
    methods: list[str] = []
    for record in records:
        predictions = record.get("predictions") or []
        if predictions and isinstance(predictions[0], dict):
            label = str(predictions[0].get("label", predictions[0].get("index", "")))
            classes[label] = classes.get(label, 0) + 1
        for e in record["explanations"]:
            if isinstance(e, dict) and str(e.get("method", "")) not in methods:
                methods.append(str(e.get("method", "")))
    class_options = "".join(f'<option value="{esc(c)}">{esc(c)} ({n})</option>'
                            for c, n in sorted(classes.items(), key=lambda item: item[0].lower()))
    method_options = "".join(f'<option value="{esc(m)}">{esc(m)}</option>' for m in sorted(methods))
    return ('<nav id="controls">'
            f'<label>top-1 class <select id="f-class"><option value="">all</option>{class_options}</select></label>'
            f'<label>method <select id="f-method"><option value="">all</option>{method_options}</select></label>'
            '<label><input type="checkbox" id="f-empty"> empty map only</label>'
            '<label>sort <select id="sort"><option value="name">file name</option>'
            '<option value="score-desc">top-1 score, high first</option>'
            '<option value="score-asc">top-1 score, low first</option></select></label>'
            f'<output id="count">{len(records)} of {len(records)} images</output></nav>')


def _asset(name: str) -> str:
    """A file of the page (page.css, page.js) shipped in this package, inlined into every report."""
    return resources.files("camcli.report").joinpath(name).read_text("utf-8")



def render_html(data: ReportData, pictures: dict, out_dir: Path, title: str) -> str:
    """The page, as text. `pictures` maps ("original", record json), ("overlay", overlay path) and
    ("mean_map", path) to the _Picture to show."""
    cards = "\n".join(_card(record, pictures, out_dir) for record in data.records)
    # The sections go from the methods to the model to the images: whether the maps depend on the model
    # at all (sanity), how well they localise (evaluation), the model's strategies (audit), then the
    # failures and every image. The sanity check is short and says whether the rest can be trusted, so
    # it comes first, never below the audit's cards.
    body = [_header_html(data, title), _contents_html(data)]
    if data.sanity is not None:
        body.append(sanity_html(data.sanity))
    if data.evaluation is not None:
        body.append(_evaluation_html(data.evaluation))
    if data.audit is not None:
        body.append(audit_html(data.audit, pictures, out_dir))
    body.append(_failures_html(data.failures))
    body.append(_controls_html(data.records))
    body.append(f'<main><div id="cards">\n{cards}\n</div></main>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{HTML_GENERATOR} {__version__}\"><title>{esc(title)}</title>"
            f"<style>{_asset('page.css')}</style></head><body>\n{''.join(body)}\n"
            f"<script>{_asset('page.js')}</script></body></html>\n")


def _add_overlay_job(jobs: dict, out_dir: Path, overlay) -> None:
    path = inside(out_dir, overlay)
    if path is not None and ("overlay", overlay) not in jobs:
        thumb = thumbnail_path(Path(os.path.normpath(overlay))).as_posix()
        jobs[("overlay", overlay)] = (path, overlay, thumb)


def _make_thumbnails(data: ReportData, out_dir: Path) -> dict:
    """Thumbnail every original (when found) and overlay, and the audit's sample overlays, several at a
    time; returns the pictures. The audit's mean maps are small: they are shown as they are."""
    jobs = {}  # key -> (source, href, thumb path relative to OUT)
    for record in data.records:
        source = _original_source(record)
        if source is not None:
            thumb = Path(record["_json"]).with_suffix("")
            thumb = thumb.with_name(thumb.name + THUMB_SUFFIX).as_posix()
            href = Path(os.path.relpath(os.path.abspath(source), os.path.abspath(out_dir))).as_posix()
            jobs[("original", record["_json"])] = (source, href, thumb)
        for explanation in record["explanations"]:
            _add_overlay_job(jobs, out_dir, explanation.get("overlay") if isinstance(explanation, dict) else None)
    clusters = [c for k in data.audit.classes for c in k.clusters] if data.audit is not None else []
    shown = [c for k in data.audit.classes if not k.summarised for c in k.clusters] if data.audit is not None else []
    for sample in (s for c in shown for s in c.samples):  # a class summarised in one line shows no samples
        _add_overlay_job(jobs, out_dir, sample)

    def make(job):
        source, href, thumb = job
        return _Picture(href, thumb if ensure_thumbnail(source, out_dir / thumb) else None)

    # Pillow releases the GIL while decoding, resizing and encoding.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="camcli-thumb") as pool:
        pictures = dict(zip(jobs, pool.map(make, jobs.values())))
    for cluster in clusters:
        path = inside(out_dir, cluster.mean_map)
        shown = cluster.mean_map if path is not None and path.is_file() else None
        pictures[("mean_map", cluster.mean_map)] = _Picture(cluster.mean_map, shown)
    return pictures


def write_page(out_dir: Path, title: str | None = None) -> Path:
    """Write OUT/index.html (and the thumbnails it needs) for the camcli outputs in `out_dir`; return
    its path. Raises UsageError when `out_dir` holds no camcli outputs."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir / REPORT_NAME, may_replace, fix="move it away, then write the report")
    data = load_report_data(out_dir)
    pictures = _make_thumbnails(data, out_dir)
    page = render_html(data, pictures, out_dir, title or f"camcli report: {out_dir.resolve().name}")
    path = out_dir / REPORT_NAME
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
