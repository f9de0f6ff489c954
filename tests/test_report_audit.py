"""The report's sections for `camcli audit`: audit.json (SpRAy clusters, a scatter plot per class, a
card per cluster) and sanity.json (the cascading randomisation plot and its tables), without a
browser. The files are written by tests/report_fixtures.py as the audit writes them; camcli.audit
itself is not imported."""

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from report_fixtures import ODD_STEM, add_small_classes, make_audit_folder, make_output_folder, sanity_record

from camcli.cli import cli
from camcli.report.audit_files import read_audit, read_sanity
from camcli.report.page import load_report_data, write_page
from camcli.runs.files import save_json
from camcli.runs.layout import Layout


class _Parsed(HTMLParser):
    """The page's SVG shapes (with the class of the <svg> they are in), images, sections and problems."""

    def __init__(self, text):
        super().__init__()
        self.svg, self.shapes, self.images, self.sections, self.problems = None, [], [], [], []
        self._problem = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svg = attrs.get("class")
        elif tag in ("circle", "path") and self.svg:
            self.shapes.append((self.svg, tag, attrs))
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "section":
            self.sections.append(attrs.get("id"))
        self._problem = tag == "p" and attrs.get("class") == "problem"

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None

    def handle_data(self, data):
        if self._problem:
            self.problems.append(data)
            self._problem = False

    def shape(self, svg, tag, css=None):
        return [a for s, t, a in self.shapes if s == svg and t == tag and (css is None or css in a["class"].split())]


def render(out):
    write_page(out)
    text = (out / "index.html").read_text("utf-8")
    return text, _Parsed(text)


def section(text, name):
    start = text.index(f'<section id="{name}">')
    return text[start:text.index("</section>", start)]


@pytest.fixture
def audited(tmp_path):
    return make_audit_folder(tmp_path)


def rewrite(out, audit):
    Layout(out).audit_json.write_text(json.dumps(audit), "utf-8")  # json.dumps writes NaN as NaN, as Python reads it


# --- audit.json -----------------------------------------------------------------------------------


def test_audit_section_header_classes_and_scatter(audited):
    out, audit = audited
    text, parsed = render(out)
    assert parsed.sections == ["audit"]  # no evaluation, no sanity check, no failures
    audit_text = section(text, "audit")
    assert ("model <b>demo-cheat</b> &middot; layer <b>conv6</b> &middot; method <b>gradcam</b> &middot; "
            "by <b>predicted</b> &middot; images <b>17</b> &middot; grid <b>32</b> &middot; neighbours <b>10</b> "
            "&middot; <b>1</b> flagged") in audit_text
    assert "max_share <b>0.25</b> &middot; min_tightness <b>0.5</b> &middot; min_away <b>0.3</b>" in audit_text
    # square comes first in audit.json; circle, with its flagged cluster, comes first on the page
    assert audit_text.index("<h3>circle (class 0) &middot; 12 images") < audit_text.index("<h3>square (class 1)")
    points = parsed.shape("scatter", "circle", "pt")
    assert len(points) == 12 + 5
    flagged = parsed.shape("scatter", "circle", "flagged")
    assert len(flagged) == 3 and all("k1" in p["class"].split() for p in flagged)
    assert {p["class"] for p in points} == {"pt k0", "pt k1 flagged"}
    hrefs = {unquote(p["data-href"]) for p in points}
    assert hrefs == {o for c in audit["classes"] for o in c["overlays"]}
    # the cards' thumbnails are reused for hovering
    assert all((out / unquote(p["data-thumb"])).is_file() for p in points)
    for p in points:
        x, y = float(p["cx"]), float(p["cy"])
        assert 0 <= x <= 320 and 0 <= y <= 320


def test_cluster_cards_show_figures_reason_mean_map_and_samples(audited):
    out, audit = audited
    text, parsed = render(out)
    audit_text = section(text, "audit")
    flagged = audit_text[audit_text.index('<article class="cluster k1 flagged">'):]
    flagged = flagged[:flagged.index("</article>")]
    assert '<h4>cluster 1 <span class="badge flag">FLAGGED</span></h4>' in flagged
    assert ("small (25% of the class), tight (0.74), its mass sits in the corners (0.61 against 0.06 for the main "
            "strategy)") in flagged
    for key, value in (("size", "3"), ("share", "25%"), ("focus", "0.12"), ("border_share", "0.7"),
                       ("corner_share", "0.61"), ("tightness", "0.74"), ("purity", "\u2014")):
        assert f'data-key="{key}">{value}</td>' in flagged, key
    assert 'data-key="purity">0.95 (circle)</td>' in audit_text
    assert 'data-key="share">75%</td>' in audit_text

    maps = [img for img in parsed.images if img.get("alt", "").startswith("mean map")]
    assert sorted(img["src"] for img in maps) == ["audit.0.0.png", "audit.0.1.png", "audit.1.0.png"]
    assert all(img["loading"] == "lazy" for img in maps)
    samples = _Parsed(flagged).images[1:]  # after the mean map
    assert [unquote(img["src"]) for img in samples] == [
        f"imgs/tagged_circle_{i:03d}.gradcam.0.thumb.jpg" for i in range(3)]
    assert [img["alt"] for img in samples] == [f"imgs/tagged_circle_{i:03d}.png" for i in range(3)]
    assert all((out / unquote(img["src"])).is_file() for img in samples)
    # the main circle cluster has 9 members: 6 samples
    main = audit_text[audit_text.index('<article class="cluster k0">'):]
    assert main[:main.index("</article>")].count('<a class="zoom"') == 6


def test_audit_text_and_paths_are_escaped(audited):
    out, audit = audited
    audit["model"] = "<script>alert(1)</script>"
    circle = next(c for c in audit["classes"] if c["label"] == "circle")
    circle["label"] = '<b>circle</b> & "co"'
    circle["clusters"][1]["reason"] = "<img src=x onerror=alert(1)> & more"
    rewrite(out, audit)
    text, parsed = render(out)
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>circle</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in text
    assert "&lt;b&gt;circle&lt;/b&gt; &amp; &quot;co&quot;" in text
    member = f"{ODD_STEM}.png"
    escaped = "imgs/odd &lt;&amp;&quot;q&#x27;s&quot;&gt; circle.png"
    assert f"<title>{escaped}</title>" in text  # the point's tooltip
    assert f'data-caption="{escaped}"' in text  # the sample's caption: the member, not its overlay
    odd = [p for p in parsed.shape("scatter", "circle", "pt") if "odd" in p["data-href"]]
    assert len(odd) == 1 and unquote(odd[0]["data-href"]) == f"{ODD_STEM}.gradcam.0.png"
    assert odd[0]["data-href"] == "imgs/odd%20%3C%26%22q%27s%22%3E%20circle.gradcam.0.png"
    assert member not in text
    assert text.count("<script>") == 1


def test_no_audit_or_sanity_files_no_sections(tmp_path):
    out, _ = make_output_folder(tmp_path)
    text, parsed = render(out)
    assert "audit" not in parsed.sections and "sanity" not in parsed.sections
    assert '<svg class="scatter"' not in text and '<svg class="sanity"' not in text
    assert load_report_data(out).problems == []


def test_a_folder_with_only_the_audit_files_gets_a_page(tmp_path):
    out, audit = make_audit_folder(tmp_path, with_records=False)
    save_json(Layout(out).sanity_json, sanity_record())
    text, parsed = render(out)
    assert parsed.sections[:2] == ["sanity", "audit"]
    assert len(parsed.shape("scatter", "circle", "pt")) == 17
    samples = [img for img in parsed.images if img["src"].endswith(".thumb.jpg")]
    assert len(samples) == 6 + 3 + 5 and all((out / unquote(img["src"])).is_file() for img in samples)
    assert "<b>0</b> images explained" in text


def test_only_sanity_json_gets_a_page(tmp_path):
    save_json(Layout(tmp_path).sanity_json, sanity_record())
    _, parsed = render(tmp_path)
    assert parsed.sections == ["sanity"]


def test_missing_pictures_and_null_values_are_shown_gracefully(audited):
    out, audit = audited
    Layout(out).audit_map(0, 1).unlink()
    circle = next(c for c in audit["classes"] if c["label"] == "circle")
    (out / circle["clusters"][1]["samples"][0]).unlink()
    circle["overlays"][0] = None
    for key in ("size", "share", "focus", "tightness", "purity", "purity_label", "reason"):
        circle["clusters"][0][key] = None
    del circle["clusters"][0]["flagged"], circle["clusters"][0]["main"]
    rewrite(out, audit)
    text, parsed = render(out)
    assert load_report_data(out).problems == []
    assert "no mean map" in text
    flagged = text[text.index('<article class="cluster k1 flagged">'):]
    assert '<span class="frame missing"' in flagged[:flagged.index("</article>")]
    assert 'data-key="tightness">\u2014</td>' in text and 'data-key="share">\u2014</td>' in text
    points = parsed.shape("scatter", "circle", "pt")
    assert len(points) == 17 and sum("data-href" not in p for p in points) == 1


def test_mean_map_name_comes_from_the_layout_when_not_given(audited):
    out, audit = audited
    for audit_class in audit["classes"]:
        for cluster in audit_class["clusters"]:
            del cluster["mean_map"]
    rewrite(out, audit)
    _, parsed = render(out)
    maps = sorted(img["src"] for img in parsed.images if img.get("alt", "").startswith("mean map"))
    assert maps == ["audit.0.0.png", "audit.0.1.png", "audit.1.0.png"]


def _circle(audit):
    return next(c for c in audit["classes"] if c["label"] == "circle")


MALFORMED = [  # (change to audit.json, the problem line, whether the audit section is still shown)
    (lambda a: a.pop("classes"), "audit.json has no list of classes: the audit is not shown", False),
    (lambda a: a.update(classes={"circle": 1}), "audit.json has no list of classes: the audit is not shown", False),
    (lambda a: a["classes"].insert(0, "circle"), "audit.json: classes[0] is not an object (circle)", True),
    (lambda a: _circle(a)["embedding"].pop(),
     "audit.json: class circle: the lists of members do not have one length (12 members, 12 overlays, 11 embedding, "
     "12 cluster_of): no scatter plot", True),
    (lambda a: _circle(a).update(members="imgs"), "audit.json: class circle: members not a list: no scatter plot",
     True),
    (lambda a: _circle(a)["embedding"].__setitem__(3, ["a", 0.5]),
     "audit.json: class circle: member 3 is malformed", True),
    (lambda a: _circle(a)["embedding"].__setitem__(3, [0.5]), "audit.json: class circle: member 3 is malformed", True),
    (lambda a: _circle(a)["cluster_of"].__setitem__(2, "one"), "audit.json: class circle: member 2 is malformed",
     True),
    (lambda a: _circle(a)["clusters"][1].pop("id"), "audit.json: class circle: a cluster without an integer id", True),
    (lambda a: _circle(a)["clusters"].append(7), "audit.json: class circle: a cluster without an integer id", True),
    (lambda a: _circle(a).update(clusters={"0": {}}), "audit.json: class circle: clusters is not a list", True),
    (lambda a: _circle(a)["clusters"][1].update(tightness="high"),
     "audit.json: class circle, cluster 1: tightness is not a number (high)", True),
    (lambda a: _circle(a)["clusters"][1].update(flagged="yes"),
     "audit.json: class circle, cluster 1: flagged is not true or false (yes)", True),
    (lambda a: _circle(a)["clusters"][1].update(samples="a.png"),
     "audit.json: class circle, cluster 1: samples is not a list (a.png)", True),
    (lambda a: _circle(a)["clusters"][1].update(share=float("nan")),
     "audit.json: class circle, cluster 1: share is not a number (nan)", True),
    (lambda a: a.update(rule=[0.25]), "audit.json: rule is not an object ([0.25])", True),
    (lambda a: _circle(a).update(eigenvalues="none"), "audit.json: class circle: eigenvalues is not a list (none)",
     True),
]


@pytest.mark.parametrize(("change", "problem", "shown"), MALFORMED)
def test_malformed_audit_json_is_a_problem_line_not_a_crash(audited, change, problem, shown):
    out, audit = audited
    change(audit)
    rewrite(out, audit)
    text, parsed = render(out)
    assert any(line.startswith(problem) for line in parsed.problems), parsed.problems
    assert ("audit" in parsed.sections) == shown
    assert text.rstrip().endswith("</html>")


@pytest.mark.parametrize(("content", "problem"), [
    (b"{", "cannot read audit.json: Expecting property name enclosed in double quotes"),
    (b"[1, 2]", "audit.json is not a JSON object"),
    (b"\xff\xfe", "cannot read audit.json: 'utf-8' codec can't decode byte 0xff"),
])
def test_unreadable_audit_json(audited, content, problem):
    out, _ = audited
    Layout(out).audit_json.write_bytes(content)
    _, parsed = render(out)
    assert "audit" not in parsed.sections
    assert any(line.startswith(problem) for line in parsed.problems), parsed.problems


def test_a_class_without_an_embedding_keeps_its_cluster_cards(audited):
    out, audit = audited
    _circle(audit)["embedding"] = None
    rewrite(out, audit)
    text, parsed = render(out)
    assert load_report_data(out).problems == []
    assert len(parsed.shape("scatter", "circle", "pt")) == 5  # square's only
    assert "no embedding to plot" in text and text.count('<article class="cluster') == 3


def test_read_audit_orders_flagged_classes_first(audited):
    out, _ = audited
    problems = []
    audit = read_audit(out, problems)
    assert problems == [] and [c.label for c in audit.classes] == ["circle", "square"]
    assert [c.flagged for c in audit.classes] == [True, False]
    assert audit.classes[0].clusters[1].figures["corner_share"] == 0.61
    assert audit.classes[0].member_of[f"{ODD_STEM}.gradcam.0.png"] == f"{ODD_STEM}.png"
    assert read_audit(out / "nowhere", problems) is None and problems == []


SMALL = ["triangle", "star", "cross", "ring", "oval", "heart"]  # six classes of one image each


def test_classes_too_small_for_strategies_are_one_line_not_cards(audited):
    """Issue 30: six one-image classes gave six cards with one cluster each and nothing to compare it
    with. They are one line now, each name linking to its mean map, its note as the tooltip."""
    out, audit = audited
    added = add_small_classes(out, audit, SMALL)
    text, parsed = render(out)
    audit_text = section(text, "audit")
    assert audit_text.count('<div class="audit-class"') == 2  # circle and square, which were clustered
    assert audit_text.count('<article class="cluster') == 3 and "nothing to compare with</p>" not in audit_text
    assert all(f"<h3>{label}" not in audit_text for label in SMALL)
    line = audit_text[audit_text.index('id="audit-too-few"'):]
    line = line[:line.index("</p>")]
    assert "<b>6</b> classes have too few maps to look for strategies in" in line
    for entry in added:
        mean_map = entry["clusters"][0]["mean_map"]
        assert (f'<a class="zoom" href="{mean_map}" data-caption="{entry["label"]}: mean map of 1 image" '
                f'title="1 maps: too few to find strategies (at least 12); one cluster">{entry["label"]}</a> '
                "(1 image)") in line
    # the line comes before the clustered classes' cards, and their samples are not thumbnailed
    assert audit_text.index('id="audit-too-few"') < audit_text.index('<div class="audit-class"')
    assert not any(img["src"].startswith("few/") for img in parsed.images)
    assert not list((out / "few").glob("*.thumb.jpg"))
    assert load_report_data(out).problems == []


def test_a_small_class_with_a_flagged_cluster_keeps_its_card(audited):
    out, audit = audited
    add_small_classes(out, audit, ["oval"], images=3, flagged=True)
    add_small_classes(out, audit, ["heart"], images=7)
    text, _ = render(out)
    audit_text = section(text, "audit")
    assert "<h3>oval (class 12) &middot; 3 images" in audit_text  # flagged: never folded into the line
    assert "<b>1</b> class has too few maps" in audit_text and ">heart</a> (7 images)" in audit_text


def test_a_class_without_eigenvalues_keeps_its_card(audited):
    """Only an empty list of eigenvalues says that no strategies were looked for."""
    out, audit = audited
    added = add_small_classes(out, audit, ["oval"])
    del added[0]["eigenvalues"]
    rewrite(out, audit)
    audit_class = next(c for c in read_audit(out, []).classes if c.label == "oval")
    assert audit_class.searched and not audit_class.summarised
    text, _ = render(out)
    assert "<h3>oval (class 12)" in text and 'id="audit-too-few"' not in text


def test_many_small_classes_are_folded_away(audited):
    out, audit = audited
    labels = [f"class_{i:02d}" for i in range(40)]
    add_small_classes(out, audit, labels)
    text, _ = render(out)
    audit_text = section(text, "audit")
    assert '<details class="facts too-few" id="audit-too-few"><summary><b>40</b> classes have too few maps' \
           in audit_text
    assert all(f">{label}</a> (1 image)" in audit_text for label in labels)
    assert audit_text.count('<div class="audit-class"') == 2


def test_the_sanity_check_comes_before_the_audit_and_the_contents_line_leads_to_both(audited):
    """Issue 30: the sanity plot sat below the audit's cards. It comes first now, and a line under the
    title links to every section with its verdict."""
    out, audit = audited
    add_small_classes(out, audit, SMALL)
    save_json(Layout(out).sanity_json, sanity_record())
    text, parsed = render(out)
    assert parsed.sections == ["sanity", "audit"]
    assert text.index('<svg class="sanity"') < text.index('<section id="audit">') < text.index('class="cluster')
    contents = text[text.index('<nav id="contents"'):]
    contents = contents[:contents.index("</nav>")]
    assert contents.index('href="#sanity"') < contents.index('href="#audit"') < contents.index('href="#cards"')
    assert "Sanity check</a> (1 of 2 methods failed)" in contents and "Audit</a> (1 flagged)" in contents
    assert text.index("</header>") < text.index('<nav id="contents"') < text.index('<section id="sanity">')


def test_no_contents_line_for_a_page_of_images_only(tmp_path):
    out, _ = make_output_folder(tmp_path)
    (out / "summary.json").unlink()
    text, _ = render(out)
    assert '<nav id="contents"' not in text


# --- sanity.json ----------------------------------------------------------------------------------


def test_sanity_section_plot_and_tables(audited):
    out, _ = audited
    save_json(Layout(out).sanity_json, sanity_record())
    text, parsed = render(out)
    sanity = section(text, "sanity")
    lines = parsed.shape("sanity", "path", "line")
    assert [p["data-method"] for p in lines] == ["gradcam", "guidedbackprop"]
    assert all(p["d"].count("M") == 1 and p["d"].count("L") == 4 for p in lines)
    assert len(parsed.shape("sanity", "circle", "dot")) == 10
    # x: the depths in order; y: 0..1 (no negative spearman_abs), 1 at the top
    labels = ["none", "predictions", "dense_1", "conv6", "conv5"]
    positions = [sanity.index(f">{label}</text>") for label in labels]
    assert positions == sorted(positions)
    gradcam = [tuple(map(float, pair.split())) for pair in lines[0]["d"].removeprefix("M").split("L")]
    xs, ys = zip(*gradcam, strict=True)
    assert list(xs) == sorted(xs) and ys[0] < ys[1] < ys[2]  # falling correlation goes down the plot
    assert ">-1</text>" not in sanity and ">0.25</text>" in sanity
    assert "<tr><th>gradcam</th><td class=\"num\">0.93</td><td class=\"num\">0.5</td>" \
           '<td><span class="badge pass">passed</span></td></tr>' in sanity
    assert "<tr><th>guidedbackprop</th><td class=\"num\">0.1</td><td class=\"num\">0.5</td>" \
           '<td><span class="badge flag">failed</span></td></tr>' in sanity
    assert ('<tr><th>conv6</th><td class="num">0.08</td><td class="num">-0.05</td><td class="num">0.1</td>'
            '<td class="num">0.91</td><td class="num">0.9</td><td class="num">0.86</td></tr>') in sanity
    assert "threshold <b>0.5</b>" in sanity and "images <b>3</b>" in sanity and "class <b>top1</b>" in sanity


def test_sanity_with_negative_correlations_and_gaps(tmp_path):
    record = sanity_record()
    record["methods"]["gradcam"]["spearman_abs"] = [1.0, -0.3, None, 0.1, 0.0]
    save_json(Layout(tmp_path).sanity_json, record)
    text, parsed = render(tmp_path)
    gradcam = parsed.shape("sanity", "path", "line")[0]
    assert gradcam["d"].count("M") == 2  # a gap where the value is missing
    assert ">-1</text>" in section(text, "sanity")
    assert len(parsed.shape("sanity", "circle", "dot")) == 4 + 5


SANITY_MALFORMED = [
    (lambda s: s.pop("depths"), "sanity.json has no list of depths or no mapping of methods", False),
    (lambda s: s.update(methods=["gradcam"]), "sanity.json has no list of depths or no mapping of methods", False),
    (lambda s: s["methods"]["gradcam"]["ssim"].pop(),
     "sanity.json: method gradcam: ssim is not a list of 5 values, one per depth (4 values)", True),
    (lambda s: s["methods"]["gradcam"].update(spearman_abs="high"),
     "sanity.json: method gradcam: spearman_abs is not a list of 5 values, one per depth (high)", True),
    (lambda s: s["methods"]["gradcam"]["spearman"].__setitem__(1, "x"),
     "sanity.json: method gradcam: spearman holds values that are not numbers", True),
    (lambda s: s["methods"].update(gradcam=0.9), "sanity.json: method gradcam is not an object (0.9)", True),
    (lambda s: s["methods"]["gradcam"].update(score="good"),
     "sanity.json: method gradcam: score is not a number (good)", True),
    (lambda s: s["methods"]["gradcam"].update(passed=1),
     "sanity.json: method gradcam: passed is not true or false (1)", True),
    (lambda s: s.update(threshold="half"), "sanity.json: threshold is not a number (half)", True),
]


@pytest.mark.parametrize(("change", "problem", "shown"), SANITY_MALFORMED)
def test_malformed_sanity_json_is_a_problem_line_not_a_crash(audited, change, problem, shown):
    out, _ = audited
    record = sanity_record()
    change(record)
    save_json(Layout(out).sanity_json, record)
    _, parsed = render(out)
    assert any(line.startswith(problem) for line in parsed.problems), parsed.problems
    assert ("sanity" in parsed.sections) == shown
    assert "audit" in parsed.sections


def test_sanity_method_with_a_bad_series_keeps_the_other_line(tmp_path):
    record = sanity_record()
    record["methods"]["gradcam"]["spearman_abs"] = [1.0, 0.5]
    save_json(Layout(tmp_path).sanity_json, record)
    problems = []
    sanity = read_sanity(tmp_path, problems)
    assert len(problems) == 1 and [m.name for m in sanity.methods] == ["gradcam", "guidedbackprop"]
    _, parsed = render(tmp_path)
    assert [p["data-method"] for p in parsed.shape("sanity", "path", "line")] == ["guidedbackprop"]


# --- the command ----------------------------------------------------------------------------------


def test_report_command_shows_the_audit(audited):
    out, _ = audited
    save_json(Layout(out).sanity_json, sanity_record())
    result = CliRunner().invoke(cli, ["report", str(out)], prog_name="camcli", catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    text = Path(result.stdout.strip()).read_text("utf-8")
    assert '<section id="audit">' in text and '<section id="sanity">' in text
    assert json.loads(Layout(out).audit_json.read_text("utf-8"))["kind"] == "audit"  # read, never rewritten
