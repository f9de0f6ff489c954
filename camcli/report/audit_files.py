"""audit.json and sanity.json, the two files `camcli audit` writes into OUT, read for the report page.

Both are checked field by field, because the page must open whatever they hold: a file that cannot
be read, or a field of the wrong type, is one line in `problems` (shown at the top of the page),
never an exception, and what is still sound is shown. A field that is absent or null is shown as a
dash. Lists that go together (a class's members, overlays, embedding and cluster_of) must have the
same length, else that class gets no scatter plot; a method's series must have one value per depth.
Nothing here writes HTML (that is camcli.report.audit_sections).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from camcli.report.markup import cell, is_scalar, number
from camcli.runs.layout import Layout

AUDIT_FACTS = ("model", "layer", "method", "by", "images", "flagged", "grid", "neighbours")
# a cluster's numbers (camcli.audit.spray.Cluster)
FIGURES = ("size", "share", "tightness", "peak_spread", "pattern", "evidence", "focus", "border_share", "corner_share",
           "purity")
SANITY_FACTS = ("model", "layer", "class", "seed", "threshold", "seconds")
SERIES = ("spearman_abs", "spearman", "ssim")  # one value per depth for each method
MAX_SAMPLES = 6
_KINDS = {bool: "true or false", int: "an integer", str: "a string", list: "a list", dict: "an object"}


@dataclass
class Point:
    """One member of a class in the t-SNE embedding."""

    x: float
    y: float
    member: str  # the image's path, as recorded
    overlay: str | None  # its overlay, relative to OUT
    cluster: int | None  # its cluster's id (None, or an id no cluster has: unclustered)


@dataclass
class AuditCluster:
    id: int
    figures: dict[str, float | None]  # FIGURES
    main: bool
    flagged: bool
    reason: str
    purity_label: str | None
    mean_map: str | None  # relative to OUT: the cluster's "mean_map", else Layout.audit_map's name
    samples: list[str]  # overlays of some members, relative to OUT, at most MAX_SAMPLES


@dataclass
class AuditShortcut:
    """A flagged mark: maps that peak on the same pattern, in one place or several (camcli.audit.spray.PileUp)."""

    reason: str
    figures: dict[str, float | None]  # SHORTCUT_FIGURES
    crops: str | None  # the crops side by side, relative to OUT


SHORTCUT_FIGURES = ("size", "share", "peak_spread", "pattern", "distinct", "transfer", "reliance", "evidence")


@dataclass
class AuditClass:
    label: str
    class_index: int | None
    images: int | None
    clusters: list[AuditCluster]
    points: list[Point]  # empty when there is no embedding, or a malformed one
    member_of: dict[str, str]  # overlay -> the image's path, to caption the samples
    note: str = ""  # the audit's note on the class ("3 maps: too few to find strategies (at least 12)...")
    searched: bool = True  # SpRAy looked for strategies; False when audit.json's eigenvalues are [] (too few maps)
    shortcuts: list[AuditShortcut] = field(default_factory=list)  # the flagged pile-ups

    @property
    def flagged(self) -> bool:
        return any(cluster.flagged for cluster in self.clusters)

    @property
    def summarised(self) -> bool:
        """Shown in one line, not a card: SpRAy looked for no strategies in the class (too few distinct
        maps: one cluster, nothing compared) and none of its clusters is flagged."""
        return not self.searched and not self.flagged


@dataclass
class Audit:
    facts: dict  # the AUDIT_FACTS present (scalars)
    rule: dict  # the rule's thresholds (scalars)
    classes: list[AuditClass]  # those with a flagged cluster first, else in the file's order


@dataclass
class SanityMethod:
    name: str
    series: dict[str, list[float | None]]  # SERIES -> one value per depth (None where missing)
    score: float | None
    passed: bool | None


@dataclass
class Sanity:
    facts: dict  # the SANITY_FACTS present (scalars), and "images" (how many)
    depths: list[str]  # "none" (the trained model), then each randomised depth, from the top layer down
    threshold: float | None
    methods: list[SanityMethod]


def read_object(path: Path, problems: list[str]) -> dict | None:
    """The JSON object in `path`; None when there is no such file, or (noted in `problems`) when it
    cannot be read or holds something else."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"cannot read {path.name}: {error}")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return value


def _short(value) -> str:
    text = cell(value)
    return text if len(text) <= 40 else text[:39] + "\u2026"


def _field(entry: dict, key: str, kind: type, where: str, problems: list[str]):
    """entry[key] when it is a `kind`; None when it is absent or null, and (noted) when it is not a `kind`."""
    value = entry.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return value
    problems.append(f"{where}: {key} is not {_KINDS[kind]} ({_short(value)})")
    return None


def _number_field(entry: dict, key: str, where: str, problems: list[str]) -> float | None:
    value = entry.get(key)
    if value is not None and number(value) is None:
        problems.append(f"{where}: {key} is not a number ({_short(value)})")
    return number(value)


def _scalars(entry, keys=None) -> dict:
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items() if (keys is None or k in keys) and is_scalar(v) and v is not None}


# --- audit.json -----------------------------------------------------------------------------------


def read_audit(out_dir: Path, problems: list[str]) -> Audit | None:
    """OUT/audit.json, checked; None when it is absent, unreadable or has no list of classes."""
    layout = Layout(out_dir)
    raw = read_object(layout.audit_json, problems)
    if raw is None:
        return None
    classes = raw.get("classes")
    if not isinstance(classes, list):
        problems.append("audit.json has no list of classes: the audit is not shown")
        return None
    if raw.get("rule") is not None and not isinstance(raw.get("rule"), dict):
        problems.append(f"audit.json: rule is not an object ({_short(raw['rule'])})")
    parsed = [_audit_class(entry, position, layout, problems) for position, entry in enumerate(classes)]
    parsed = [c for c in parsed if c is not None]
    parsed.sort(key=lambda c: not c.flagged)  # stable: the file's order within each group
    return Audit(facts=_scalars(raw, AUDIT_FACTS), rule=_scalars(raw.get("rule")), classes=parsed)


def _audit_class(entry, position: int, layout: Layout, problems: list[str]) -> AuditClass | None:
    if not isinstance(entry, dict):
        problems.append(f"audit.json: classes[{position}] is not an object ({_short(entry)})")
        return None
    where = f"audit.json: classes[{position}]"
    class_index = _field(entry, "class_index", int, where, problems)
    label = entry.get("label")
    label = label if isinstance(label, str) else str(class_index if class_index is not None else position)
    where = f"audit.json: class {label}"
    clusters = _field(entry, "clusters", list, where, problems) or []
    parsed = [_cluster(c, where, layout, class_index, problems) for c in clusters]
    points, member_of = _points(entry, where, problems)
    piles = _field(entry, "pile_ups", list, where, problems) or []
    shortcuts = [AuditShortcut(reason=pile.get("reason") if isinstance(pile.get("reason"), str) else "",
                               figures={key: _number_field(pile, key, where, problems) for key in SHORTCUT_FIGURES},
                               crops=pile.get("crops") if isinstance(pile.get("crops"), str) else None)
                 for pile in piles if isinstance(pile, dict) and pile.get("flagged") is True]
    eigenvalues = _field(entry, "eigenvalues", list, where, problems)  # [] when no strategies were looked for
    return AuditClass(label=label, class_index=class_index, images=_field(entry, "images", int, where, problems),
                      clusters=[c for c in parsed if c is not None], points=points, member_of=member_of,
                      note=_field(entry, "note", str, where, problems) or "", searched=eigenvalues != [],
                      shortcuts=shortcuts)


def _cluster(entry, where: str, layout: Layout, class_index: int | None, problems: list[str]) -> AuditCluster | None:
    cluster_id = entry.get("id") if isinstance(entry, dict) else None
    if not isinstance(cluster_id, int) or isinstance(cluster_id, bool):
        problems.append(f"{where}: a cluster without an integer id is not shown ({_short(entry)})")
        return None
    where = f"{where}, cluster {cluster_id}"
    mean_map = _field(entry, "mean_map", str, where, problems)
    if mean_map is None and class_index is not None:
        mean_map = layout.relative(layout.audit_map(class_index, cluster_id))
    samples = _field(entry, "samples", list, where, problems) or []
    return AuditCluster(id=cluster_id, figures={key: _number_field(entry, key, where, problems) for key in FIGURES},
                   main=_field(entry, "main", bool, where, problems) is True,
                   flagged=_field(entry, "flagged", bool, where, problems) is True,
                   reason=_field(entry, "reason", str, where, problems) or "",
                   purity_label=_field(entry, "purity_label", str, where, problems),
                   mean_map=mean_map, samples=[s for s in samples if isinstance(s, str) and s][:MAX_SAMPLES])


def _points(entry: dict, where: str, problems: list[str]) -> tuple[list[Point], dict[str, str]]:
    """The class's embedding as points, and overlay -> member; no points (noted) when the lists that go
    together are not lists, differ in length, or hold a malformed entry. No embedding: no points."""
    columns = {key: entry.get(key) for key in ("members", "overlays", "embedding", "cluster_of")}
    if columns["overlays"] is None and isinstance(columns["members"], list):
        columns["overlays"] = [None] * len(columns["members"])
    if columns["embedding"] is None:
        return [], _member_of(columns["members"], columns["overlays"])
    wrong = [key for key, value in columns.items() if not isinstance(value, list)]
    if wrong:
        problems.append(f"{where}: {', '.join(wrong)} not a list: no scatter plot")
        return [], {}
    if len({len(value) for value in columns.values()}) > 1:
        lengths = ", ".join(f"{len(value)} {key}" for key, value in columns.items())
        problems.append(f"{where}: the lists of members do not have one length ({lengths}): no scatter plot")
        return [], {}
    points = []
    for i, row in enumerate(zip(columns["members"], columns["overlays"], columns["embedding"], columns["cluster_of"])):
        point = _point(*row)
        if point is None:
            problems.append(f"{where}: member {i} is malformed ({_short(list(row))}): no scatter plot")
            return [], {}
        points.append(point)
    return points, _member_of(columns["members"], columns["overlays"])


def _point(member, overlay, xy, cluster) -> Point | None:
    """A Point, or None unless: member a string, overlay a string or null, xy two finite numbers,
    cluster an integer or null."""
    x, y = (number(v) for v in xy) if isinstance(xy, list) and len(xy) == 2 else (None, None)
    if x is None or y is None:
        return None
    if not isinstance(member, str) or not (overlay is None or isinstance(overlay, str)):
        return None
    if not (cluster is None or (isinstance(cluster, int) and not isinstance(cluster, bool))):
        return None
    return Point(x=x, y=y, member=member, overlay=overlay or None, cluster=cluster)


def _member_of(members, overlays) -> dict[str, str]:
    if not isinstance(members, list) or not isinstance(overlays, list):
        return {}
    return {o: m for m, o in zip(members, overlays) if isinstance(o, str) and isinstance(m, str)}


# --- sanity.json ----------------------------------------------------------------------------------


def read_sanity(out_dir: Path, problems: list[str]) -> Sanity | None:
    """OUT/sanity.json, checked; None when it is absent, unreadable, or has no depths or methods."""
    raw = read_object(Layout(out_dir).sanity_json, problems)
    if raw is None:
        return None
    depths, methods = raw.get("depths"), raw.get("methods")
    if not isinstance(depths, list) or not depths or not isinstance(methods, dict):
        problems.append("sanity.json has no list of depths or no mapping of methods: the sanity check is not shown")
        return None
    depths = [cell(depth) for depth in depths]
    facts = _scalars(raw, SANITY_FACTS)
    images = raw.get("images")
    if isinstance(images, list) or (isinstance(images, int) and not isinstance(images, bool)):
        facts["images"] = len(images) if isinstance(images, list) else images
    parsed = [_sanity_method(name, entry, len(depths), problems) for name, entry in methods.items()]
    return Sanity(facts=facts, depths=depths, threshold=_number_field(raw, "threshold", "sanity.json", problems),
                  methods=[m for m in parsed if m is not None])


def _sanity_method(name: str, entry, depths: int, problems: list[str]) -> SanityMethod | None:
    where = f"sanity.json: method {name}"
    if not isinstance(entry, dict):
        problems.append(f"{where} is not an object ({_short(entry)})")
        return None
    return SanityMethod(name=name, series={key: _series(entry.get(key), depths, f"{where}: {key}", problems)
                                           for key in SERIES},
                        score=_number_field(entry, "score", where, problems),
                        passed=_field(entry, "passed", bool, where, problems))


def _series(values, depths: int, where: str, problems: list[str]) -> list[float | None]:
    """One number (or None) per depth; all None (noted) when `values` is not a list of that length."""
    if values is None:
        return [None] * depths
    if not isinstance(values, list) or len(values) != depths:
        size = f"{len(values)} values" if isinstance(values, list) else _short(values)
        problems.append(f"{where} is not a list of {depths} values, one per depth ({size})")
        return [None] * depths
    if any(v is not None and number(v) is None for v in values):
        problems.append(f"{where} holds values that are not numbers ({_short(values)})")
    return [number(v) for v in values]
