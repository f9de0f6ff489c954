"""The HTML report and the side-by-side panels, without a browser and without TensorFlow: escaping,
summaries and shards, thumbnails, evaluation tables, the `camcli report` command, panel pictures.
Output folders are written by tests/report_fixtures.py in the runner's exact layout."""

import json
import os
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from cli_helpers import invoke
from PIL import Image
from report_fixtures import make_output_folder, summary, write_photo, write_record

from camcli.errors import UsageError
from camcli.maps.panel import panel_title, render_panel
from camcli.report import page as report
from camcli.report.page import ensure_thumbnail, write_page
from camcli.runs import files as outputs
from camcli.runs import layout
from camcli.runs.discovery import discover
from camcli.runs.files import save_panel
from camcli.runs.layout import Layout, thumbnail_path


class _Page(HTMLParser):
    """Collects the cards (their data-* attributes), images, links and all text of a page."""

    def __init__(self, text):
        super().__init__()
        self.cards, self.images, self.links, self.text = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "article" and "card" in attrs.get("class", ""):
            self.cards.append(attrs)
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs)

    def handle_data(self, data):
        self.text.append(data)


def page(out):
    text = (out / "index.html").read_text("utf-8")
    return text, _Page(text)


@pytest.fixture
def out(tmp_path):
    return make_output_folder(tmp_path)[0]


# --- the page -------------------------------------------------------------------------------------


def test_one_card_per_image_with_its_thumbnails_and_failures(out):
    assert write_page(out) == out / "index.html"
    text, parsed = page(out)
    names = sorted(card["data-name"] for card in parsed.cards)
    records = sorted(json.loads(p.read_text("utf-8"))["image"] for p in out.rglob("*.json") if p.name != "summary.json")
    assert names == records and len(names) == 6
    # the original and one overlay per (class, method): 6 originals + 7 overlays
    assert len(parsed.images) == 13
    assert all(img["loading"] == "lazy" for img in parsed.images)
    for img in parsed.images:
        thumb = out / unquote(img["src"])
        assert thumb.is_file() and thumb.name.endswith(".thumb.jpg")
    assert "Failures (1)" in text and "cannot identify image file" in text
    assert "broken &lt;img&gt;.jpg" in text
    assert "<script src" not in text and "http://" not in text and "https://" not in text  # self-contained


def test_card_attributes_drive_the_filters(out):
    write_page(out)
    _, parsed = page(out)
    by_name = {Path(card["data-name"]).name: card for card in parsed.cards}
    assert by_name["circle_1.png"]["data-top1"] == "circle"
    assert float(by_name["circle_1.png"]["data-score"]) == pytest.approx(0.91)
    assert by_name["star_1.png"]["data-empty"] == "1"
    assert by_name["ring_1.png"]["data-empty"] == "0"


def test_text_from_json_is_escaped(tmp_path):
    out = tmp_path / "out"
    nasty = '<script>alert("x")</script> & \'q\''
    write_record(out, "x", None, [(0, 0.5)], display=nasty,
                 extra={"warning": "<b>w</b>", "model": "<i>m</i>"})
    (out / "summary.json").write_text(json.dumps(summary(2, [{"image": "<img src=x onerror=alert(1)>",
                                                              "error": "bad & <worse>"}])), "utf-8")
    write_page(out, title="<title>&")
    text, parsed = page(out)
    assert "<script>alert" not in text and "<img src=x" not in text and "<i>m</i>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in text
    assert "bad &amp; &lt;worse&gt;" in text and "&lt;title&gt;&amp;" in text
    assert parsed.cards[0]["data-name"] == nasty  # attribute values round-trip exactly
    assert text.count("<script>") == 1  # only the page's own script


def test_paths_are_percent_encoded_in_links(tmp_path):
    out = tmp_path / "out"
    write_record(out, "a #1%? é", None, [(1, 0.7)])
    write_page(out)
    text, parsed = page(out)
    assert parsed.images[0]["src"] == "a%20%231%25%3F%20%C3%A9.gradcam.1.thumb.jpg"
    assert (out / "a #1%? é.gradcam.1.thumb.jpg").is_file()


def test_undecodable_file_names_do_not_break_the_page(tmp_path):
    out = tmp_path / "out"
    stem = os.fsdecode(b"caf\xe9")  # Latin-1 bytes on a UTF-8 system: a lone surrogate
    try:
        write_record(out, stem, None, [(0, 0.5)])
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses undecodable names")
    write_page(out)
    text, parsed = page(out)  # valid UTF-8
    assert parsed.images[0]["src"] == "caf%E9.gradcam.0.thumb.jpg"  # the file's real bytes
    assert "caf\ufffd" in text


def test_box_empty_badge_guided_layers_and_mask(tmp_path):
    out = tmp_path / "out"
    write_record(out, "boxed", None, [(0, 0.9)], size=(60, 40), bbox=[6, 4, 36, 24])
    write_record(out, "guided", None, [(1, 0.8)], methods=("guidedbackprop",), empty=True)
    record = json.loads((out / "guided.json").read_text("utf-8"))
    record["explanations"][0].update(layers=["conv_a", "conv_b"], mask="guided.mask.png", guided=True)
    outputs.save_json(out / "guided.json", record)
    outputs.save_png(out / "guided.mask.png", np.zeros((40, 60), np.uint8))
    write_page(out)
    text, parsed = page(out)
    assert 'class="box" style="left:10.00%;top:10.00%;width:50.00%;height:50.00%"' in text
    assert text.count('<span class="badge empty">empty map</span>') == 2  # on the card and on the overlay
    assert '<span class="badge" title="a gradient picture, not a heatmap over the image: no box is drawn' in text
    assert "2 layers" in text and "conv_a + conv_b" in text
    assert any(link.get("href") == "guided.mask.png" for link in parsed.links)


def test_no_box_on_a_gradient_picture(tmp_path):
    """Issue 30: a guided method's picture got the record's box, measured on another map (guidedbackprop:
    a patch of the gradient's edges). Heatmaps keep their box; gradient pictures get none, and their
    badge says why. A record without "guided" is a heatmap, as before."""
    out = tmp_path / "out"
    write_record(out, "img", None, [(0, 0.9)], methods=("gradcam", "guidedbackprop", "guidedgradcam"),
                 bbox=[6, 4, 36, 24])
    record = json.loads((out / "img.json").read_text("utf-8"))
    for explanation in record["explanations"]:
        explanation["guided"] = explanation["method"] != "gradcam"
    outputs.save_json(out / "img.json", record)
    write_page(out)
    text, _ = page(out)
    figures = {chunk.split('"', 1)[0]: chunk.split("</figure>", 1)[0]
               for chunk in text.split('<figure class="thumb" data-method="')[1:]}
    assert set(figures) == {"gradcam", "guidedbackprop", "guidedgradcam"}
    assert 'class="box" style="left:10.00%;top:10.00%;width:50.00%;height:50.00%"' in figures["gradcam"]
    for method in ("guidedbackprop", "guidedgradcam"):
        assert 'class="box"' not in figures[method], method
        assert "no box is drawn on it" in figures[method] and ">gradients</span>" in figures[method]
    assert text.count('class="box"') == 1


def test_bbox_style_clips_and_rejects_bad_boxes():
    assert report._bbox_style([0, 0, 200, 50], 100, 100) == "left:0.00%;top:0.00%;width:100.00%;height:50.00%"
    for bad in (None, [1, 2, 3], [5, 5, 5, 9], ["a", 0, 1, 1], [0, 0, float("nan"), 1]):
        assert report._bbox_style(bad, 100, 100) is None
    assert report._bbox_style([0, 0, 1, 1], 0, 100) is None


def test_missing_overlay_and_missing_original_are_shown_gracefully(tmp_path):
    out = tmp_path / "out"
    write_record(out, "gone", None, [(0, 0.5)], display="not/here.jpg")
    (out / "gone.gradcam.0.png").unlink()
    write_page(out)
    text, parsed = page(out)
    assert parsed.images == [] and "overlay missing" in text and len(parsed.cards) == 1


def test_shard_summaries_are_merged_and_missing_shards_reported(tmp_path):
    out = tmp_path / "out"
    write_record(out, "one", None, [(0, 0.5)])
    outputs.save_json(out / "summary.1-of-3.json", summary(2, [{"image": "first.jpg", "error": "e1"}], (1, 3)))
    outputs.save_json(out / "summary.3-of-3.json", summary(2, [{"image": "third.jpg", "error": "e3"}], (3, 3)))
    write_page(out)
    text, _ = page(out)
    assert "Failures (2)" in text and "first.jpg" in text and "third.jpg" in text
    assert "shard 2 of 3 has no summary (summary.2-of-3.json is missing)" in text
    assert "3 shards" in text


def test_shards_that_disagree_are_reported_not_fatal(tmp_path):
    out = tmp_path / "out"
    write_record(out, "one", None, [(0, 0.5)])
    outputs.save_json(out / "summary.1-of-2.json", summary(1, [], (1, 2)))
    outputs.save_json(out / "summary.1-of-3.json", summary(1, [], (1, 3)))
    write_page(out)
    text, parsed = page(out)
    assert "disagree on the shard count" in text and len(parsed.cards) == 1


def test_records_of_other_runs_and_other_json_are_left_out(tmp_path):
    out, _ = make_output_folder(tmp_path)
    nested, _ = make_output_folder(out / "older")  # another run's folder inside OUT
    (out / "notes.json").write_text('{"image": "x", "other": 1}', "utf-8")
    (out / "broken.json").write_text("{", "utf-8")
    problems = []
    records = report.find_records(out, problems)
    assert len(records) == 6 and not any(r["_json"].startswith("older/") for r in records)
    assert problems == ["cannot read broken.json: Expecting property name enclosed in double quotes: "
                        "line 1 column 2 (char 1)"]
    # a record copied somewhere else no longer matches its overlays' names
    (out / "copy.json").write_text((out / "a" / "circle_1.json").read_text("utf-8"), "utf-8")
    assert len(report.find_records(out)) == 6


def test_folder_without_outputs_is_a_usage_error(tmp_path):
    (tmp_path / "photo.json").write_text("{}", "utf-8")
    with pytest.raises(UsageError, match="no camcli outputs in"):
        write_page(tmp_path)
    assert not (tmp_path / "index.html").exists()


def test_an_evaluate_folder_gets_its_table_and_failures(tmp_path):
    evaluation = {"model": "demo", "failures": [{"image": "bad.png", "error": "truncated PNG"}],
                  "methods": {"gradcam": {"layer": "conv6", "rows": 3, "metrics": {"pointing": 0.6667}}}}
    outputs.save_json(tmp_path / "evaluation.json", evaluation)
    page = write_page(tmp_path).read_text("utf-8")
    assert '<section id="evaluation">' in page and "<td>0.6667</td>" in page
    assert "<h2>Failures (1)</h2>" in page and "<td>bad.png</td><td>truncated PNG</td>" in page
    assert "<b>0</b> images explained" in page


def test_summary_without_records_still_lists_failures(tmp_path):
    outputs.save_json(tmp_path / "summary.json", summary(1, [{"image": "a.jpg", "error": "truncated"}]))
    write_page(tmp_path)
    text, parsed = page(tmp_path)
    assert parsed.cards == [] and "truncated" in text


# --- evaluation.json ------------------------------------------------------------------------------


def test_evaluation_methods_table(out):
    evaluation = {"model": "demo", "images": 6, "passed": True,
                  "methods": {"gradcam": {"layer": "conv", "rows": [{"x": 1}],
                                          "metrics": {"pointing": 0.83, "iou": 0.5}},
                              "cam": {"layer": "conv", "metrics": {"pointing": 0.5, "iou": None}}},
                  "gates": [{"metric": "pointing", "bound": 0.8, "passed": True}],
                  "rows": [{"image": str(i)} for i in range(500)]}
    outputs.save_json(out / "evaluation.json", evaluation)
    write_page(out)
    text, parsed = page(out)
    section = text[text.index('<section id="evaluation">'):text.index("</section>")]
    assert "<th>method</th><th>layer</th><th>pointing</th><th>iou</th>" in section
    assert "<tr><th>gradcam</th><td>conv</td><td>0.83</td><td>0.5</td></tr>" in section
    assert "<tr><th>cam</th><td>conv</td><td>0.5</td><td>\u2014</td></tr>" in section
    assert "<tr><th>passed</th><td>yes</td></tr>" in section
    assert "rows: 500 entries (see evaluation.json)" in section
    assert len(parsed.cards) == 6  # evaluation.json is not an image record


@pytest.mark.parametrize("evaluation", [{"score": 0.5, "note": "<x>"}, {"methods": ["a", "b"]}, {"methods": {"a": 1}},
                                        [1, 2], "text"])
def test_evaluation_of_any_shape_renders(out, evaluation):
    (out / "evaluation.json").write_text(json.dumps(evaluation), "utf-8")
    write_page(out)
    text, _ = page(out)
    if isinstance(evaluation, dict):
        assert '<section id="evaluation">' in text
    else:
        assert "evaluation.json is not a JSON object" in text
    assert "<x>" not in text


# --- thumbnails -----------------------------------------------------------------------------------


def test_thumbnails_are_small_marked_jpegs_written_atomically_and_reused(tmp_path, monkeypatch):
    source = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), np.uint8)).save(source)
    thumb = thumbnail_path(source)
    assert thumb.name == "big.thumb.jpg"
    writes = []
    real_write = outputs.write_bytes_atomic
    monkeypatch.setattr(outputs, "write_bytes_atomic", lambda path, data: (writes.append(path), real_write(path, data)))

    assert ensure_thumbnail(source, thumb)
    assert writes == [thumb]
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (256, 192)
    assert layout.is_camcli_output(thumb) and not layout.is_camcli_output(source)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(layout.TEMP_PREFIX)] == []

    assert ensure_thumbnail(source, thumb)  # up to date: reused
    assert writes == [thumb]
    later = thumb.stat().st_mtime_ns + 5_000_000_000
    os.utime(source, ns=(later, later))  # the source changed since
    assert ensure_thumbnail(source, thumb)
    assert writes == [thumb, thumb]


def test_thumbnail_of_unreadable_source(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert not ensure_thumbnail(bad, tmp_path / "bad.thumb.jpg")
    assert not ensure_thumbnail(tmp_path / "missing.png", tmp_path / "missing.thumb.jpg")
    assert not (tmp_path / "bad.thumb.jpg").exists()


def test_report_twice_reuses_thumbnails(out):
    write_page(out)
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*.thumb.jpg")}
    write_page(out)
    assert times and {p: p.stat().st_mtime_ns for p in out.rglob("*.thumb.jpg")} == times


def test_thumbnails_are_never_read_back_as_input_photos(tmp_path):
    photos = tmp_path / "photos"
    write_photo(photos / "cat.png")
    write_record(photos, "cat", photos / "cat.png", [(0, 0.5)])  # --out is the photo folder
    write_page(photos)
    assert (photos / "cat.thumb.jpg").is_file() and (photos / "cat.gradcam.0.thumb.jpg").is_file()
    tasks, skipped = discover([photos], photos)
    assert [task.out_stem for task in tasks] == ["cat"] and skipped == []


# --- the command ----------------------------------------------------------------------------------


def test_report_command(out):
    result = invoke("report", out, "--title", "Shapes")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "index.html")
    assert "<title>Shapes</title>" in (out / "index.html").read_text("utf-8")


def test_report_command_on_a_folder_without_outputs(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"camcli: error: no camcli outputs in {tmp_path} (no image records, no summary.json, no evaluation.json); "
        f"run `camcli explain IMAGES --out {tmp_path}` first"]


@pytest.mark.slow
def test_report_command_imports_no_tensorflow(out):
    code = ("import sys; from click.testing import CliRunner; from camcli.cli import cli; "
            f"r = CliRunner().invoke(cli, ['report', {str(out)!r}]); assert r.exit_code == 0, r.output; "
            "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- panels ---------------------------------------------------------------------------------------


def _panel_inputs():
    rgb = np.zeros((60, 90, 3), np.uint8)
    rgb[:, :, 0] = np.linspace(0, 255, 90, dtype=np.uint8)
    rgb[20:40, 30:60] = (20, 200, 40)
    yy, xx = np.mgrid[0:60, 0:90]
    heatmap = np.exp(-((xx - 45) ** 2 + (yy - 30) ** 2) / 300.0).astype(np.float32)
    overlay = (rgb * 0.5 + np.stack([heatmap * 255] * 3, -1) * 0.5).astype(np.uint8)
    return rgb, heatmap, overlay


def test_panel_has_the_default_size_and_real_content():
    rgb, heatmap, overlay = _panel_inputs()
    picture = render_panel(rgb, heatmap, overlay, panel_title("tabby", 0.8123, "gradcam", "block5_conv3"), "jet")
    assert picture.shape == (450, 1200, 3) and picture.dtype == np.uint8
    assert picture.std() > 20
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 200  # a colour bar, a heatmap, text
    # dark text (the title) at the top, on the white figure background
    assert (picture[:45].min(axis=2) < 80).sum() > 100 and np.median(picture[:45]) == 255


def test_panel_without_heatmap_and_with_a_big_image():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (2000, 3000, 3), np.uint8)
    picture = render_panel(big, None, big, "guided", "jet")
    assert picture.shape == (450, 1200, 3) and picture.std() > 20


def test_panel_title_and_path():
    assert panel_title("tabby", 0.8123, "gradcam", "block5_conv3") == "tabby (score 0.812) - gradcam at block5_conv3"
    assert panel_title("cat", None, "cam", ["a", "b"]) == "cat - cam at a + b"
    paths = Layout(Path("out")).map_paths("a/cat", "gradcam", 285, "jpg")
    assert paths == {"overlay": Path("out/a/cat.gradcam.285.jpg"), "heatmap": Path("out/a/cat.gradcam.285.npy"),
                     "mask": Path("out/a/cat.gradcam.285.mask.png"), "panel": Path("out/a/cat.gradcam.285.panel.png")}


def test_panel_unknown_colormap_is_a_usage_error():
    rgb, heatmap, overlay = _panel_inputs()
    with pytest.raises(UsageError, match="unknown colormap 'no-such-map'"):
        render_panel(rgb, heatmap, overlay, "t", colormap="no-such-map")


@pytest.mark.slow
def test_panels_render_the_same_from_several_threads(tmp_path):
    rgb, heatmap, overlay = _panel_inputs()
    expected = render_panel(rgb, heatmap, overlay, "same", "viridis")
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(render_panel(rgb, heatmap, overlay, "same", "viridis"))
        except Exception as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 9
    assert all(np.array_equal(result, expected) for result in results)
    path = save_panel(tmp_path / "x.gradcam.1.panel.png", rgb, heatmap, overlay, "saved", "jet")
    assert layout.is_camcli_png(path) and Image.open(path).size == (1200, 450)
