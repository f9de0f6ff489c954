"""The HTML report in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

The page must load from file:// without console errors, show one card per image, load every
thumbnail, filter and sort correctly, and render to a screenshot that is not blank. `make test`
installs chromium first where apt can (`make browser`); without it these tests skip.
"""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from report_fixtures import make_audit_folder, make_output_folder, sanity_record

from camcli.cli import cli
from camcli.report.page import write_page
from camcli.runs.files import save_json
from camcli.runs.layout import Layout

pytestmark = pytest.mark.slow  # a real browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CAMCLI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"chromium not installed ({CHROMIUM}): run `make browser` or `apt-get install chromium`",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # Playwright's own browser download is not needed (nor possible offline): use the system's.
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Page:
    """A page opened from file://, recording every console error, script error and failed request."""

    def __init__(self, browser, html: Path, viewport=(1280, 900)):
        self.errors = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("requestfailed", lambda request: self.errors.append(f"request failed: {request.url}"))
        self.page.goto(html.resolve().as_uri(), wait_until="load")

    def js(self, expression, argument=None):
        return self.page.evaluate(expression, argument)

    def load_every_image(self):
        """Scroll each (lazy) thumbnail into view, wait until all have finished; their naturalWidths."""
        self.js("""() => { for (const img of document.images) img.scrollIntoView(); window.scrollTo(0, 0); }""")
        self.js("""async () => { for (const img of document.images) { img.scrollIntoView();
                   await new Promise(r => img.complete ? r() : (img.onload = img.onerror = r)); } }""")
        self.page.wait_for_function("[...document.images].every(img => img.complete)", timeout=15_000)
        return self.js("[...document.images].map(img => [img.getAttribute('src'), img.naturalWidth])")

    def visible_names(self):
        return self.js("[...document.querySelectorAll('.card')].filter(c => !c.hidden).map(c => c.dataset.name)")

    def choose(self, select_id, value):
        self.page.select_option(f"#{select_id}", value=value)

    def screenshot(self) -> np.ndarray:
        self.js("window.scrollTo(0, 0)")
        return np.asarray(Image.open(io.BytesIO(self.page.screenshot(full_page=False))).convert("RGB"))

    def close(self):
        self.page.close()


def assert_not_blank(picture: np.ndarray):
    """A real page: not one flat colour, with the many colours of thumbnails and text."""
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    assert picture.std() > 25, picture.std()
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 500


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text("utf-8")) for p in sorted(out.rglob("*.json"))
            if not p.name.startswith(("summary", "evaluation"))]


def test_page_loads_filters_sorts_and_zooms(browser, tmp_path):
    out, written = make_output_folder(tmp_path)
    write_page(out)
    page = Page(browser, out / "index.html")
    try:
        names = sorted(r["image"] for r in written)
        assert sorted(page.js("[...document.querySelectorAll('.card')].map(c => c.dataset.name)")) == names
        assert len(names) == 6

        widths = page.load_every_image()
        assert len(widths) == 13 and all(width > 0 for _, width in widths), widths

        top1 = {r["image"]: r["predictions"][0]["label"] for r in written}
        for label in sorted(set(top1.values())):
            page.choose("f-class", label)
            assert sorted(page.visible_names()) == sorted(n for n, c in top1.items() if c == label), label
            assert page.js("document.getElementById('count').textContent").startswith(
                f"{sum(c == label for c in top1.values())} of 6")
        page.choose("f-class", "")
        assert len(page.visible_names()) == 6

        page.choose("f-method", "scorecam")  # only one image has a scorecam map, and only it is shown
        assert [Path(n).name for n in page.visible_names()] == ["square_1.png"]
        assert page.js("[...document.querySelectorAll('figure[data-method]')].filter(f => !f.hidden)"
                       ".map(f => f.dataset.method)") == ["scorecam"]
        page.choose("f-method", "")
        page.page.check("#f-empty")
        assert [Path(n).name for n in page.visible_names()] == ["star_1.png"]
        page.page.uncheck("#f-empty")

        page.choose("sort", "score-desc")
        by_score = sorted(written, key=lambda r: -r["predictions"][0]["score"])
        assert page.visible_names() == [r["image"] for r in by_score]
        page.choose("sort", "name")
        assert page.visible_names() == sorted(names)

        page.page.click("figure[data-method] a.zoom")  # the full-size overlay, in a lightbox
        page.page.wait_for_function("document.querySelector('#lightbox img')?.complete", timeout=10_000)
        assert page.js("document.querySelector('#lightbox img').naturalWidth") == 60
        page.page.keyboard.press("Escape")
        assert page.js("document.getElementById('lightbox')") is None

        assert_not_blank(page.screenshot())
        assert page.errors == []
    finally:
        page.close()


def test_report_of_a_real_demo_run(browser, tmp_path):
    """`camcli explain --model demo` with two methods on the generated samples, then `camcli report`."""
    images = REPO / "sample_images" / "generated"
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["explain", str(images), "--model", "demo", "--class", "top1", "--class", "top2",
                                 "--method", "gradcam", "--method", "cam", "--out", str(out), "--quiet"],
                           prog_name="camcli", catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(cli, ["report", str(out)], prog_name="camcli", catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    count = len(list(images.glob("*.png")))
    assert len(records(out)) == count

    page = Page(browser, out / "index.html")
    try:
        assert page.js("document.querySelectorAll('.card').length") == count
        widths = page.load_every_image()
        assert len(widths) == count * 5  # the original, and two classes per image for each of two methods
        assert all(width > 0 for _, width in widths), widths
        labels = {r["image"]: r["predictions"][0]["label"] for r in records(out)}
        label = sorted(labels.values())[0]
        page.choose("f-class", label)
        assert sorted(page.visible_names()) == sorted(n for n, c in labels.items() if c == label)
        page.choose("f-class", "")
        page.choose("f-method", "cam")  # every card stays, showing only its two cam overlays
        shown = page.js("[...document.querySelectorAll('figure[data-method]')].filter(f => !f.hidden)"
                        ".map(f => f.dataset.method)")
        assert shown == ["cam"] * (count * 2) and len(page.visible_names()) == count
        page.choose("f-method", "")
        picture = page.screenshot()
        assert_not_blank(picture)
        Image.fromarray(picture).save(tmp_path / "report.png")
        assert page.errors == []
    finally:
        page.close()


def test_audit_and_sanity_sections(browser, tmp_path):
    """audit.json and sanity.json (as `camcli audit` writes them) in a browser: a point per member in each
    class's scatter plot, the flagged ones outlined; every mean map and sample loads; hovering a point
    previews its overlay and clicking enlarges it; one line per method in the sanity plot."""
    out, audit = make_audit_folder(tmp_path)
    save_json(Layout(out).sanity_json, sanity_record())
    write_page(out)
    page = Page(browser, out / "index.html")
    try:
        counts = page.js("[...document.querySelectorAll('svg.scatter')]"
                         ".map(svg => svg.querySelectorAll('circle').length)")
        by_label = {c["label"]: len(c["members"]) for c in audit["classes"]}
        assert counts == [by_label["circle"], by_label["square"]] == [12, 5]  # flagged class first
        assert page.js("document.querySelectorAll('svg.scatter circle.flagged').length") == 3
        outline = page.js("getComputedStyle(document.querySelector('svg.scatter circle.flagged')).stroke")
        assert outline == "rgb(17, 17, 17)"
        fills = page.js("[...document.querySelectorAll('svg.scatter circle')].map(c => getComputedStyle(c).fill)")
        assert len(set(fills)) == 2  # one colour per cluster (the square's one cluster shares the first)

        page.load_every_image()
        cluster_images = page.js("[...document.querySelectorAll('#audit .cluster img')]"
                                 ".map(img => [img.getAttribute('src'), img.naturalWidth])")
        assert len(cluster_images) == 3 + (6 + 3 + 5)  # a mean map per cluster, up to 6 samples each
        assert all(width > 0 for _, width in cluster_images), cluster_images
        assert sorted(src for src, width in cluster_images if width == 32) == [
            "audit.0.0.png", "audit.0.1.png", "audit.1.0.png"]

        point = "svg.scatter circle.flagged"
        page.page.hover(point)
        page.page.wait_for_function("document.querySelector('.preview img')?.complete", timeout=10_000)
        assert page.js("document.querySelector('.preview img').naturalWidth") > 0
        title = page.js(f"document.querySelector('{point}').textContent")
        assert title.startswith("imgs/tagged_circle_")
        assert page.js("document.querySelector('.preview figcaption').textContent") == title
        page.page.click(point)
        page.page.wait_for_function("document.querySelector('#lightbox img')?.complete", timeout=10_000)
        assert page.js("document.querySelector('#lightbox img').naturalWidth") == 60  # the full-size overlay
        page.page.keyboard.press("Escape")

        methods = page.js("[...document.querySelectorAll('svg.sanity path')].map(p => p.dataset.method)")
        assert methods == ["gradcam", "guidedbackprop"]
        strokes = page.js("[...document.querySelectorAll('svg.sanity path')].map(p => getComputedStyle(p).stroke)")
        assert len(set(strokes)) == 2
        assert page.js("document.querySelectorAll('svg.sanity circle').length") == 10
        assert_not_blank(page.screenshot())
        assert page.errors == []
    finally:
        page.close()


def test_a_real_audits_crops_load(browser, tmp_path):
    """`camcli audit --report` on scenes where demo-cheat follows a corner tag: each flagged mark's crops (the
    carriers' pictures around the mark, side by side) load in the page, 96 pixels high, one tile per carrier shown."""
    from camcli.models.demo import CLASSES
    from camcli.models.demo.scenes import make_scene

    images = tmp_path / "scenes"
    images.mkdir()
    rng = np.random.default_rng(31)
    for index in range(len(CLASSES)):
        for i in range(14):
            scene = make_scene(rng, size=96, class_index=index, tag=i < 4)
            Image.fromarray(scene.image).save(images / f"{CLASSES[index]}_{i:02d}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["audit", str(images), "--model", "demo-cheat", "--out", str(out), "--report",
                                      "-q"])
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text())
    crops = [pile["crops"] for cls in audit["classes"] for pile in cls["pile_ups"] if pile["flagged"]]
    assert crops, "demo-cheat follows the tag: a mark is flagged"
    page = Page(browser, out / "index.html")
    try:
        page.load_every_image()
        shown = page.js("[...document.querySelectorAll('figure.crops img')]"
                        ".map(img => [img.getAttribute('src'), img.naturalWidth, img.naturalHeight])")
        assert sorted(src for src, _, _ in shown) == sorted(crops)
        for src, width, height in shown:
            tiles = (width + 4) // 100  # 96-pixel tiles with 4-pixel gaps
            assert height == 96 and width == tiles * 100 - 4 and 1 <= tiles <= 8, (src, width, height)
        assert page.errors == []
    finally:
        page.close()
