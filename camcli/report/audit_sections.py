"""The report page's sections for `camcli audit`: the SpRAy clusters (audit.json) and the sanity check
(sanity.json), as read and checked by camcli.report.audit_files.

Plots are inline SVG built here, with no library and nothing fetched: a scatter plot of each class's
t-SNE embedding, its points coloured by cluster (the palette is CSS classes k0..k9 in page.css, kx
for unclustered points) with flagged clusters outlined and drawn on top; and the cascading
randomisation plot of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", arXiv 1810.03292,
Fig. 2): rank correlation (absolute) between the trained model's maps and those after randomising the
layers from the top down, one line per method. A cluster's sample overlays are shown as the page's
thumbnails (`pictures`, made by camcli.report.page), so a large audit stays light; a point's overlay
is only loaded when it is hovered or clicked (page.js). Classes with too few maps for SpRAy to look for
strategies in (one cluster, nothing compared, never flagged) get no card each, only their names in one
line: six one-image classes would otherwise fill the section with cards that say nothing.
"""

from __future__ import annotations

from pathlib import Path

from camcli.report.audit_files import SERIES, Audit, AuditClass, AuditCluster, AuditShortcut, Point, Sanity
from camcli.report.markup import cell, esc, inside, url

PALETTE_SIZE = 10  # k0..k9 in page.css
_SIDE, _PAD = 320, 12  # the scatter plot's square, in SVG units
_INLINE_SMALL_CLASSES = 12  # more classes too small to cluster than this: their one line is folded away
_FIGURE_NAMES = {"size": "images", "share": "share of the class", "tightness": "tightness",
                 "peak_spread": "peak spread", "pattern": "same pattern", "evidence": "hot share of the map",
                 "focus": "focus", "border_share": "border share", "corner_share": "corner share", "purity": "purity"}


def _colour(position: int | None) -> str:
    return "kx" if position is None else f"k{position % PALETTE_SIZE}"


def _percent(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.0%}"


def _facts(facts: dict, keys) -> str:
    return " &middot; ".join(f"{esc(key)} <b>{esc(cell(facts[key]))}</b>" for key in keys if key in facts)


# --- audit.json -----------------------------------------------------------------------------------


def audit_html(audit: Audit, pictures: dict, out_dir: Path) -> str:
    """The Audit section. `pictures` maps ("overlay", path) and ("mean_map", path) to objects with
    `href` and `thumb` (None when there is no picture to show)."""
    facts = _facts(audit.facts, ("model", "layer", "method", "by", "images", "grid", "neighbours"))
    flagged = sum(c.flagged for k in audit.classes for c in k.clusters)
    flagged = audit.facts.get("flagged", flagged)
    rule = " &middot; ".join(f"{esc(key)} <b>{esc(cell(value))}</b>" for key, value in audit.rule.items())
    parts = ['<section id="audit"><h2>Audit</h2>',
             f'<p class="facts">{facts} &middot; <b>{esc(cell(flagged))}</b> flagged</p>']
    if rule:
        parts.append(f'<p class="facts">a cluster is flagged by the rule: {rule}</p>')
    summarised = [k for k in audit.classes if k.summarised]
    if summarised:
        parts.append(_summarised_html(summarised, pictures))
    parts += [_class_html(k, position, pictures, out_dir)
              for position, k in enumerate(k for k in audit.classes if not k.summarised)]
    if not audit.classes:
        parts.append('<p class="facts">audit.json lists no classes</p>')
    parts.append("</section>")
    return "".join(parts)


def _summarised_html(classes: list[AuditClass], pictures: dict) -> str:
    """One line for the classes with too few maps to look for strategies in, where a card each would show
    one cluster with nothing to compare it with. A name links to its class's mean map and has the
    audit's note as its tooltip; the list is folded away when it is long."""
    names = []
    for audit_class in classes:
        count = audit_class.images if audit_class.images is not None else \
            sum(int(c.figures["size"] or 0) for c in audit_class.clusters)
        images = f"{count} image" + ("" if count == 1 else "s")
        label, note = esc(audit_class.label), f' title="{esc(audit_class.note)}"' if audit_class.note else ""
        main = next((c for c in audit_class.clusters if c.main), None)
        picture = pictures.get(("mean_map", main.mean_map)) if main is not None else None
        if picture is not None and picture.thumb:
            caption = esc(f"{audit_class.label}: mean map of {images}")
            name = f'<a class="zoom" href="{url(picture.href)}" data-caption="{caption}"{note}>{label}</a>'
        else:
            name = f"<span{note}>{label}</span>"
        names.append(f"{name} ({esc(images)})")
    lead = (f"<b>{len(classes)}</b> {'class has' if len(classes) == 1 else 'classes have'} too few maps to look for "
            "strategies in: one cluster each, nothing to compare it with, never flagged")
    listed = ", ".join(names)
    if len(classes) <= _INLINE_SMALL_CLASSES:
        return f'<p class="facts too-few" id="audit-too-few">{lead}: {listed}</p>'
    return f'<details class="facts too-few" id="audit-too-few"><summary>{lead}</summary><p>{listed}</p></details>'


def _class_html(audit_class: AuditClass, position: int, pictures: dict, out_dir: Path) -> str:
    colours = {c.id: i for i, c in enumerate(audit_class.clusters)}
    count = sum(c.flagged for c in audit_class.clusters)
    badge = f' <span class="badge flag">{count} flagged</span>' if count else ""
    index = f" (class {audit_class.class_index})" if audit_class.class_index is not None else ""
    images = f" &middot; {esc(audit_class.images)} images" if audit_class.images is not None else ""
    parts = [f'<div class="audit-class" id="audit-class-{position}">'
             f"<h3>{esc(audit_class.label)}{esc(index)}{images}{badge}</h3>"]
    parts.append('<div class="scatter-wrap">')
    if audit_class.points:
        parts.append(_scatter_svg(audit_class, colours, pictures, out_dir))
        parts.append('<figure class="preview"><figcaption>hover over a point to see its overlay; '
                     "click to enlarge</figcaption></figure>")
    else:
        parts.append('<p class="facts">no embedding to plot</p>')
    parts.append(_legend_html(audit_class, colours))
    parts.append("</div>")
    parts += [_shortcut_html(shortcut, out_dir) for shortcut in audit_class.shortcuts]
    parts.append('<div class="clusters">')
    parts += [_cluster_html(c, colours[c.id], audit_class, pictures) for c in audit_class.clusters]
    parts.append("</div></div>")
    return "".join(parts)


def _scatter_svg(audit_class: AuditClass, colours: dict[int, int], pictures: dict, out_dir: Path) -> str:
    """The embedding, rescaled to fill the square (t-SNE's axes have no units); flagged points last, on top."""
    points = audit_class.points
    flagged = {c.id for c in audit_class.clusters if c.flagged}
    xs, ys = [p.x for p in points], [p.y for p in points]

    def scale(value, low, high):
        return 0.5 if high <= low else (value - low) / (high - low)

    radius = 4 if len(points) <= 600 else 2.5
    circles = []
    for point in sorted(points, key=lambda p: p.cluster in flagged):
        x = _PAD + scale(point.x, min(xs), max(xs)) * (_SIDE - 2 * _PAD)
        y = _SIDE - _PAD - scale(point.y, min(ys), max(ys)) * (_SIDE - 2 * _PAD)
        mark = " flagged" if point.cluster in flagged else ""
        circles.append(f'<circle class="pt {_colour(colours.get(point.cluster))}{mark}" cx="{x:.1f}" cy="{y:.1f}" '
                       f'r="{radius}"{_point_links(point, pictures, out_dir)}><title>{esc(point.member)}</title>'
                       "</circle>")
    label = esc(f"t-SNE embedding of the {len(points)} images of {audit_class.label}, coloured by cluster")
    return (f'<svg class="scatter" viewBox="0 0 {_SIDE} {_SIDE}" role="img" aria-label="{label}">'
            f'<rect class="plot-bg" width="{_SIDE}" height="{_SIDE}"></rect>{"".join(circles)}</svg>')


def _point_links(point: Point, pictures: dict, out_dir: Path) -> str:
    if inside(out_dir, point.overlay) is None:
        return ""
    picture = pictures.get(("overlay", point.overlay))
    thumb = f' data-thumb="{url(picture.thumb)}"' if picture is not None and picture.thumb else ""
    return f' data-href="{url(point.overlay)}"{thumb}'


def _legend_html(audit_class: AuditClass, colours: dict[int, int]) -> str:
    rows = []
    for cluster in audit_class.clusters:
        size = cluster.figures["size"]
        notes = ' <span class="badge">main</span>' if cluster.main else ""
        notes += ' <span class="badge flag">FLAGGED</span>' if cluster.flagged else ""
        rows.append(f'<li class="{_colour(colours[cluster.id])}{" flagged" if cluster.flagged else ""}">'
                    f'<span class="swatch"></span>cluster {cluster.id} &middot; {esc(cell(size))} images &middot; '
                    f"{_percent(cluster.figures['share'])}{notes}</li>")
    unclustered = sum(p.cluster not in colours for p in audit_class.points)
    if unclustered:
        rows.append(f'<li class="kx"><span class="swatch"></span>in no cluster &middot; {unclustered} images</li>')
    return f'<ul class="legend">{"".join(rows)}</ul>'


def _cluster_html(cluster: AuditCluster, colour: int, audit_class: AuditClass, pictures: dict) -> str:
    flag = " flagged" if cluster.flagged else ""
    badges = ' <span class="badge">main strategy</span>' if cluster.main else ""
    badges += ' <span class="badge flag">FLAGGED</span>' if cluster.flagged else ""
    parts = [f'<article class="cluster {_colour(colour)}{flag}"><h4>cluster {cluster.id}{badges}</h4>']
    if cluster.reason:
        parts.append(f'<p class="reason">{esc(cluster.reason)}</p>')
    parts.append('<div class="cluster-body">')
    picture = pictures.get(("mean_map", cluster.mean_map))
    if picture is not None and picture.thumb:
        parts.append(f'<figure class="mean-map"><img loading="lazy" src="{url(picture.thumb)}" '
                     f'alt="mean map of cluster {cluster.id}"><figcaption>mean map</figcaption></figure>')
    else:
        parts.append('<figure class="mean-map"><span class="frame missing">no mean map</span></figure>')
    parts.append(_figures_table(cluster))
    parts.append("</div>")
    samples = [_sample_html(s, audit_class.member_of.get(s, s), pictures) for s in cluster.samples]
    if samples:
        parts.append(f'<div class="samples">{"".join(samples)}</div>')
    parts.append("</article>")
    return "".join(parts)


_SHORTCUT_NAMES = {"size": "images", "share": "share of the class", "peak_spread": "peak spread",
                   "pattern": "same pattern", "distinct": "distinct (carriers / carriers and near)",
                   "transfer": "pasted: answers the class", "reliance": "covered: answer changes",
                   "evidence": "hot share of each map"}


def _shortcut_html(shortcut: AuditShortcut, out_dir: Path) -> str:
    """A flagged pile-up: why, the figures the rule used, and the crops of its images side by side."""
    shown = {key: _percent(value) if key in ("share", "transfer", "reliance") else cell(value)
             for key, value in shortcut.figures.items()}
    rows = "".join(f'<tr><th>{esc(name)}</th><td class="num" data-key="{key}">{esc(shown[key])}</td></tr>'
                   for key, name in _SHORTCUT_NAMES.items())
    crops = (f'<figure class="crops"><img loading="lazy" src="{url(shortcut.crops)}" alt="the repeated pattern">'
             "<figcaption>the mark, in each image that carries it</figcaption></figure>"
             if shortcut.crops and (out_dir / shortcut.crops).is_file()
             else '<p class="facts">no crops (the images could not be read)</p>')
    return (f'<article class="shortcut flagged"><h4>possible shortcut <span class="badge flag">FLAGGED</span></h4>'
            f'<p class="reason">{esc(shortcut.reason)}</p>{crops}'
            f'<table class="figures"><tbody>{rows}</tbody></table></article>')


def _figures_table(cluster: AuditCluster) -> str:
    rows = []
    for key, name in _FIGURE_NAMES.items():
        value = cluster.figures[key]
        text = _percent(value) if key == "share" else cell(value)
        if key == "purity" and cluster.purity_label is not None:
            text += f" ({cluster.purity_label})"
        rows.append(f'<tr><th>{esc(name)}</th><td class="num" data-key="{key}">{esc(text)}</td></tr>')
    return f'<table class="figures"><tbody>{"".join(rows)}</tbody></table>'


def _sample_html(overlay: str, member: str, pictures: dict) -> str:
    picture = pictures.get(("overlay", overlay))
    if picture is None or not picture.thumb:
        return f'<span class="frame missing" title="{esc(member)}">missing</span>'
    return (f'<a class="zoom" href="{url(picture.href)}" data-caption="{esc(member)}" title="{esc(member)}">'
            f'<img loading="lazy" src="{url(picture.thumb)}" alt="{esc(member)}"></a>')


# --- sanity.json ----------------------------------------------------------------------------------

_PLOT_W, _PLOT_H = 560, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 16, 12, 70  # margins: the y ticks, the slanted depth labels below


def sanity_html(sanity: Sanity) -> str:
    facts = _facts(sanity.facts, ("model", "layer", "class", "images", "seed", "threshold", "seconds"))
    return (f'<section id="sanity"><h2>Sanity check</h2><p class="facts">{facts}</p>'
            '<p class="facts">model parameter randomisation, cascading from the top layer (Adebayo et al. 2018): '
            "how much each method's maps still resemble the trained model's; a method that passes changes "
            "its maps when the weights are randomised</p>"
            f'<div class="sanity-plot">{_sanity_svg(sanity)}{_sanity_legend(sanity)}</div>'
            f"{_scores_table(sanity)}{_values_table(sanity)}</section>")


def _sanity_svg(sanity: Sanity) -> str:
    values = [v for m in sanity.methods for v in m.series["spearman_abs"] if v is not None]
    low = -1.0 if any(v < 0 for v in values) else 0.0
    width, height = _PLOT_W - _LEFT - _RIGHT, _PLOT_H - _TOP - _BOTTOM
    step = width / (len(sanity.depths) - 1) if len(sanity.depths) > 1 else 0.0

    def at(i, value):
        x = _LEFT + (i * step if step else width / 2)
        return x, _TOP + (1.0 - (min(max(value, low), 1.0) - low) / (1.0 - low)) * height

    parts = [f'<svg class="sanity" viewBox="0 0 {_PLOT_W} {_PLOT_H}" role="img" '
             'aria-label="rank correlation (absolute) against the depth of randomisation, one line per method">']
    for tick in ([-1.0, -0.5, 0.0, 0.5, 1.0] if low < 0 else [0.0, 0.25, 0.5, 0.75, 1.0]):
        _, y = at(0, tick)
        parts.append(f'<line class="tick" x1="{_LEFT}" x2="{_LEFT + width}" y1="{y:.1f}" y2="{y:.1f}"></line>'
                     f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for i, depth in enumerate(sanity.depths):
        x, y = at(i, low)
        parts.append(f'<text class="axis" x="{x:.1f}" y="{y + 14:.1f}" text-anchor="end" '
                     f'transform="rotate(-35 {x:.1f} {y + 14:.1f})">{esc(depth)}</text>')
    for position, method in enumerate(sanity.methods):
        parts.append(_method_line(method.name, method.series["spearman_abs"], sanity.depths, _colour(position), at))
    parts.append(f'<text class="axis" x="14" y="{_TOP + height / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {_TOP + height / 2:.1f})">rank correlation (abs)</text>'
                 f'<text class="axis" x="{_PLOT_W - _RIGHT}" y="{_PLOT_H - 4}" text-anchor="end">'
                 "randomised from the top layer down →</text></svg>")
    return "".join(parts)


def _method_line(name: str, values: list[float | None], depths: list[str], colour: str, at) -> str:
    """One path for a method (a gap where a value is missing), with a dot and a tooltip per value."""
    commands, dots, pen_down = [], [], False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        x, y = at(i, value)
        commands.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
        pen_down = True
        dots.append(f'<circle class="dot {colour}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                    f"<title>{esc(name)} at {esc(depths[i])}: {value:.3f}</title></circle>")
    if not commands:
        return ""
    return (f'<path class="line {colour}" data-method="{esc(name)}" d="{" ".join(commands)}"></path>'
            + "".join(dots))


def _passed(passed: bool | None) -> str:
    if passed is None:
        return "\u2014"
    return '<span class="badge pass">passed</span>' if passed else '<span class="badge flag">failed</span>'


def _sanity_legend(sanity: Sanity) -> str:
    rows = "".join(f'<li class="{_colour(i)}"><span class="swatch"></span>{esc(m.name)} {_passed(m.passed)}</li>'
                   for i, m in enumerate(sanity.methods))
    return f'<ul class="legend">{rows}</ul>'


def _scores_table(sanity: Sanity) -> str:
    threshold = esc(cell(sanity.threshold))
    rows = "".join(f'<tr><th>{esc(m.name)}</th><td class="num">{esc(cell(m.score))}</td>'
                   f'<td class="num">{threshold}</td><td>{_passed(m.passed)}</td></tr>' for m in sanity.methods)
    return ('<table class="grid scores"><thead><tr><th>method</th><th>score</th><th>threshold</th><th>result</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _values_table(sanity: Sanity) -> str:
    """depth x (method, series): the numbers behind the plot."""
    top = "".join(f'<th colspan="{len(SERIES)}">{esc(m.name)}</th>' for m in sanity.methods)
    names = "".join(f"<th>{esc(key)}</th>" for _ in sanity.methods for key in SERIES)
    body = []
    for i, depth in enumerate(sanity.depths):
        cells = "".join(f'<td class="num">{esc(cell(m.series[key][i]))}</td>' for m in sanity.methods for key in SERIES)
        body.append(f"<tr><th>{esc(depth)}</th>{cells}</tr>")
    return (f'<table class="grid sanity-values"><thead><tr><th rowspan="2">randomised down to</th>{top}</tr>'
            f'<tr>{names}</tr></thead><tbody>{"".join(body)}</tbody></table>')

