"""Real photos at full speed: overlay formats and their markers, --max-size, reduced (draft) JPEG
decoding, HEIC and AVIF, --max-pixels, C-speed overlays and a memory budget in bytes.

Photos here are generated scenes the demo model knows, scaled up to camera-like sizes, so that
the top-1 class and the map's position can be checked against a full-size decode.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, read_json
from PIL import Image

from camcli.maps.overlay import blend, colormap_lut, overlay_picture, upsample
from camcli.runs.decode import decode_image, load_rgb, picture_bytes
from camcli.runs.discovery import discover
from camcli.runs.layout import is_camcli_output, may_replace
from camcli.runs.writer import measure


def enlarge(scene, size=(1600, 1200)):
    """A scene as a camera-sized picture (smooth, like a photo, not blocky)."""
    return Image.open(scene).convert("RGB").resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def photos(scenes, tmp_path_factory):
    """Three 1600x1200 JPEG photos (quality 92) of demo scenes."""
    folder = tmp_path_factory.mktemp("photos")
    for scene in scenes[:3]:
        enlarge(scene).save(folder / f"{scene.stem}.jpg", quality=92)
    return folder


# --- formats and markers -------------------------------------------------------------------------------


def test_auto_format_gives_photos_jpeg_and_lossless_inputs_png(photos, scenes, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    shutil.copy(scenes[3], folder / scenes[3].name)
    result = invoke("explain", folder, "--model", "demo", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    for record_path in (tmp_path / "out").glob("*_1.json"):
        record = read_json(record_path)
        overlay = tmp_path / "out" / record["explanations"][0]["overlay"]
        expected = "JPEG" if record["image"].endswith(".jpg") else "PNG"
        assert Image.open(overlay).format == expected
        assert overlay.suffix == (".jpg" if expected == "JPEG" else ".png")


@pytest.mark.parametrize("fmt,pillow_name", [
    ("png", "PNG"),  # make test-fast: PNG; the lossy formats in make test
    pytest.param("jpg", "JPEG", marks=pytest.mark.slow), pytest.param("webp", "WEBP", marks=pytest.mark.slow),
])
def test_overlays_in_every_format_carry_the_marker_and_are_never_read_back(photos, tmp_path, fmt, pillow_name):
    folder = shutil.copytree(photos, tmp_path / "in")
    first = invoke("explain", folder, "--model", "demo", "--out", folder, "--format", fmt, "-q")
    assert first.exit_code == 0, first.stderr
    overlays = sorted(folder.glob(f"*.gradcam.*.{fmt}"))
    assert len(overlays) == 3
    for overlay in overlays:
        assert Image.open(overlay).format == pillow_name
        assert is_camcli_output(overlay) and may_replace(overlay)
    # A rerun into the same folder sees the three photos only, never last run's overlays.
    tasks, skipped = discover([folder], folder)
    assert sorted(task.display.rsplit("/", 1)[-1] for task in tasks) == sorted(p.name for p in photos.iterdir())
    again = invoke("explain", folder, "--model", "demo", "--out", folder, "--format", fmt)
    assert again.exit_code == 0 and "explained 3 of 3 images" in again.stderr


def test_a_users_own_jpeg_or_webp_at_an_overlay_path_is_never_replaced(photos, tmp_path):
    out = tmp_path / "out"
    first = invoke("explain", photos / "circle_1.jpg", "--model", "demo", "--out", out, "-q")
    assert first.exit_code == 0
    overlay = out / read_json(out / "circle_1.json")["explanations"][0]["overlay"]
    for fmt in ("JPEG", "WEBP"):
        target = overlay.with_suffix(".webp") if fmt == "WEBP" else overlay
        Image.new("RGB", (8, 8)).save(target, fmt)  # the user's picture, with no camcli marker
        assert not is_camcli_output(target) and not may_replace(target)
    result = invoke("explain", photos / "circle_1.jpg", "--model", "demo", "--out", out, "--format", "webp")
    assert result.exit_code == 1 and "was not written by camcli" in result.stderr
    assert Image.open(overlay.with_suffix(".webp")).size == (8, 8)


# --- --max-size: smaller pictures, coordinates in original pixels -------------------------------------------


def test_max_size_bounds_the_pictures_and_keeps_coordinates_in_original_pixels(photos, tmp_path):
    full, small = tmp_path / "full", tmp_path / "small"
    common = ["--model", "demo", "--save-mask", "--save-heatmap", "--panel", "-q"]
    assert invoke("explain", photos, "--out", full, *common).exit_code == 0
    assert invoke("explain", photos, "--out", small, "--max-size", "400", *common).exit_code == 0
    for name in ("circle_1", "cross_1", "ring_1"):
        big, little = read_json(full / f"{name}.json"), read_json(small / f"{name}.json")
        assert (little["width"], little["height"]) == (1600, 1200)
        assert (little["output_width"], little["output_height"]) == (400, 300)
        entry, reduced = big["explanations"][0], little["explanations"][0]
        assert Image.open(small / reduced["overlay"]).size == (400, 300)
        assert Image.open(small / reduced["mask"]).size == (400, 300)
        assert np.load(small / reduced["heatmap"]).shape == (300, 400)
        # Same map, measured at a bounded resolution in both runs: the same original-pixel box and peak,
        # to within the reduced decode's effect on the map (a few original pixels).
        assert reduced["class_index"] == entry["class_index"]
        assert np.abs(np.subtract(reduced["bbox"], entry["bbox"])).max() <= 16
        assert np.abs(np.subtract(reduced["peak"], entry["peak"])).max() <= 16


def test_measure_scales_box_and_peak_back_to_original_pixels():
    unit = np.zeros((8, 8), np.float32)
    unit[2:4, 5:7] = 1.0
    box, peak = measure(unit, (4096, 2048), 0.5)  # measured at 512x256: an 8x scale
    direct = upsample(unit, height=2048, width=4096)
    ys, xs = np.nonzero(direct >= 0.5)
    # The scaled box covers the full-resolution box, and exceeds it by less than one measured pixel.
    assert box[0] <= xs.min() and box[1] <= ys.min() and box[2] >= xs.max() + 1 and box[3] >= ys.max() + 1
    assert box[0] > xs.min() - 8 and box[1] > ys.min() - 8 and box[2] < xs.max() + 9 and box[3] < ys.max() + 9
    assert 0 <= peak[0] < 4096 and 0 <= peak[1] < 2048 and direct[peak[1], peak[0]] > 0.99


# --- reduced decoding ---------------------------------------------------------------------------------------


def test_reduced_decode_gives_the_same_top1_and_map_as_a_full_decode(photos):
    import camcli

    explainer = camcli.Explainer(camcli.load_model("demo"))
    for path in sorted(photos.iterdir()):
        full = decode_image(path, model_size=explainer.loaded.input_size)
        reduced = decode_image(path, max_side=256, model_size=explainer.loaded.input_size)
        assert reduced.picture.size == (256, 192) and reduced.original_size == (1600, 1200)
        assert reduced.model_view.size[0] < 1600  # the JPEG was decoded at a reduced scale
        a, b = explainer.explain([np.asarray(full.model_view), np.asarray(reduced.model_view)])
        assert a.predictions[0].index == b.predictions[0].index
        # The stated bound: the two unit maps differ by at most 0.05 anywhere.
        assert np.abs(a.maps[0].heatmap - b.maps[0].heatmap).max() <= 0.05


def test_reduced_decode_keeps_exif_orientation(scenes, tmp_path):
    picture = enlarge(scenes[0], (1600, 1000))
    stored = picture.transpose(Image.Transpose.ROTATE_90)  # stored on its side, 1000x1600
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    path = tmp_path / "turned.jpg"
    stored.save(path, quality=95, exif=exif)
    full = load_rgb(path)
    reduced = decode_image(path, max_side=400, model_size=(48, 48))
    assert full.shape == (1000, 1600, 3)
    assert reduced.original_size == (1600, 1000) and reduced.picture.size == (400, 250)
    expected = np.asarray(Image.fromarray(full).resize((400, 250), Image.Resampling.BILINEAR, reducing_gap=3.0))
    assert np.abs(np.asarray(reduced.picture).astype(int) - expected).mean() < 3.0


def test_picture_bytes_come_from_the_header(photos):
    path = next(photos.iterdir())
    assert picture_bytes(path) == 4 * 1600 * 1200
    assert picture_bytes(path, max_side=400) == 4 * 400 * 300


# --- HEIC, AVIF and the pixel limit ------------------------------------------------------------------------------


def test_heic_and_avif_are_found_by_content_and_explained(scenes, tmp_path):
    pytest.importorskip("pillow_heif", reason="pillow-heif (keras-camcli[heif]) is not installed")
    from PIL import features

    from camcli.runs.decode import heif_reader

    if not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF (its PyPI wheels have it)")

    assert heif_reader()
    folder = tmp_path / "phone"
    folder.mkdir()
    enlarge(scenes[0], (640, 480)).save(folder / "IMG_0001.HEIC", format="HEIF", quality=90)
    enlarge(scenes[1], (640, 480)).save(folder / "IMG_0002.avif", format="AVIF", quality=90)
    enlarge(scenes[2], (640, 480)).save(folder / "no_extension", format="HEIF", quality=90)
    tasks, skipped = discover([folder], tmp_path / "out")
    assert sorted(t.display.rsplit("/", 1)[-1] for t in tasks) == ["IMG_0001.HEIC", "IMG_0002.avif", "no_extension"]
    result = invoke("explain", folder, "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "explained 3 of 3 images (0 failed)" in result.stderr
    for stem, scene in (("IMG_0001", scenes[0]), ("IMG_0002", scenes[1])):
        record = read_json(tmp_path / "out" / f"{stem}.json")
        assert (record["width"], record["height"]) == (640, 480)
        assert record["predictions"][0]["label"] == scene.stem.split("_")[0]
        assert record["explanations"][0]["overlay"].endswith(".jpg")  # photos get JPEG overlays


def test_max_pixels_lifts_the_limit_on_purpose(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # a 1600x1200 photo is 1.92 MP
    path = photos / "circle_1.jpg"
    refused = invoke("explain", path, "--model", "demo", "--out", tmp_path / "a")
    assert refused.exit_code == 1
    assert ("decompression bomb: 1920000 pixels exceeds the limit of 1000000; allow it with --max-pixels 1920000"
            in refused.stderr)
    allowed = invoke("explain", path, "--model", "demo", "--out", tmp_path / "b", "--max-pixels", "2000000")
    assert allowed.exit_code == 0, allowed.stderr
    # A reduced decode allocates what it decodes: with --max-size the same photo fits the limit.
    reduced = invoke("explain", path, "--model", "demo", "--out", tmp_path / "c", "--max-size", "400")
    assert reduced.exit_code == 0, reduced.stderr
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # camcli restored Pillow's own setting


# --- C-speed overlays -------------------------------------------------------------------------------------------


def test_the_pillow_overlay_matches_the_numpy_blend_within_one_level_or_two():
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    unit = rng.random((7, 9)).astype(np.float32)
    lut = colormap_lut("jet")
    for alpha in (0.0, 0.3, 0.5, 1.0):
        drawn = np.asarray(overlay_picture(Image.fromarray(picture), unit, alpha, lut)).astype(int)
        reference = blend(picture, upsample(unit, height=700, width=900), alpha, lut).astype(int)
        difference = np.abs(drawn - reference)
        # Pillow's blend truncates where numpy rounds (one level), and the map is rounded to 256 levels
        # first: half a level of the map moves the colour by up to one step of the lookup table, which
        # for jet is 4 levels at most (at alpha 1).
        steps = np.abs(np.diff(lut.astype(int), axis=0)).max()
        assert difference.max() <= max(1, round(alpha * steps) + 1), (alpha, difference.max())
        assert difference.mean() < 0.6, (alpha, difference.mean())


def test_an_empty_map_leaves_the_picture_untouched():
    picture = Image.fromarray(np.full((20, 30, 3), 77, np.uint8))
    assert overlay_picture(picture, np.zeros((4, 4), np.float32), 0.5, colormap_lut("jet")) is picture


# --- memory in bytes ---------------------------------------------------------------------------------------------


def test_a_tiny_picture_budget_explains_every_image_once_with_the_same_results(photos, tmp_path):
    import camcli
    from camcli.runs import runner

    seen = []
    real_decode = runner.RunPipeline.decode

    def decode(self, task, cost):
        seen.append(self.held_bytes)  # held at the time each decode is queued to run
        return real_decode(self, task, cost)

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        shutil.copy(next(p for j, p in enumerate(sorted(photos.iterdir())) if j == i % 3), folder / f"{i}.jpg")
    base = camcli.explain_paths([folder], model="demo", out=tmp_path / "base")
    runner.RunPipeline.decode = decode
    try:
        from camcli.options import FileOptions, RunOptions

        options = RunOptions(out=tmp_path / "tight", picture_budget=1)
        loaded = camcli.load_model("demo")
        from camcli.runs.discovery import discover as find

        tasks, _ = find([folder], tmp_path / "tight")
        summary = runner.run(camcli.Explainer(loaded), tasks, options, FileOptions())
    finally:
        runner.RunPipeline.decode = real_decode
    assert summary.ok == base.ok == 7
    one_picture = 4 * 1600 * 1200
    assert max(seen) <= one_picture + one_picture  # queued alone, or next to the one being finished
    for i in range(7):
        a, b = read_json(tmp_path / "base" / f"{i}.json"), read_json(tmp_path / "tight" / f"{i}.json")
        # Batches of one and of seven: the same classes, and scores equal to float32 rounding.
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        np.testing.assert_allclose([p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]],
                                   atol=1e-6)
        assert [e["bbox"] for e in a["explanations"]] == [e["bbox"] for e in b["explanations"]]


def test_a_rerun_in_another_format_removes_the_overlays_it_replaced(photos, tmp_path):
    out = tmp_path / "out"
    photo = photos / "circle_1.jpg"
    assert invoke("explain", photo, "--model", "demo", "--out", out, "--save-mask", "-q").exit_code == 0
    before = read_json(out / "circle_1.json")["explanations"][0]
    assert before["overlay"].endswith(".jpg") and (out / before["mask"]).is_file()
    assert invoke("explain", photo, "--model", "demo", "--out", out, "--format", "png", "-q").exit_code == 0
    after = read_json(out / "circle_1.json")["explanations"][0]
    assert after["overlay"].endswith(".png") and after["mask"] is None
    assert not (out / before["overlay"]).exists() and not (out / before["mask"]).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(["circle_1.json", after["overlay"], "summary.json"])


def test_evaluate_scores_a_large_photo_in_original_pixels(scenes, tmp_path):
    import camcli

    folder = tmp_path / "eval"
    folder.mkdir()
    rows = (scenes[0].parent / "truth.csv").read_text().splitlines()
    header, small_rows = rows[0], {row.split(",")[0]: row for row in rows[1:]}
    scale = 8
    lines = [header]
    for scene in scenes[:3]:
        width, height = Image.open(scene).size
        enlarge(scene, (width * scale, height * scale)).save(folder / f"{scene.stem}.jpg", quality=92)
        name, *box, label = small_rows[scene.name].split(",")
        lines.append(",".join([f"{scene.stem}.jpg", *(str(int(v) * scale) for v in box), label]))
    (folder / "truth.csv").write_text("\n".join(lines) + "\n")
    small = camcli.evaluate_paths(scenes[:3], truth=scenes[0].parent / "truth.csv", model="demo", out=None, steps=0)
    large = camcli.evaluate_paths([folder], truth=folder / "truth.csv", model="demo", out=None, steps=0)
    small_rows_out = {Path(r["image"]).stem: r for r in small.rows if r["method"] == "gradcam"}
    for row in (r for r in large.rows if r["method"] == "gradcam"):
        reference = small_rows_out[Path(row["image"]).stem]
        # Boxes come back in the large photo's own pixels, and the scores match the small scene's.
        assert row["truth_boxes"] == [[v * scale for v in box] for box in reference["truth_boxes"]]
        assert row["pointing"] == reference["pointing"]
        assert abs(row["iou"] - reference["iou"]) < 0.05 and abs(row["energy"] - reference["energy"]) < 0.05
        assert max(abs(a - b * scale) for a, b in zip(row["box"], reference["box"], strict=True)) <= 2 * scale


def test_a_bomb_is_refused_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    # A PNG header claiming 100,000 x 100,000 pixels: reading its EXIF (for the orientation) would
    # make Pillow load it, and a 40 GB allocation was what the check is there to prevent.
    import struct
    import zlib

    from PIL import ImageFile, PngImagePlugin

    from camcli.errors import ImageLoadError

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1) or real_load(self))
    with pytest.raises(ImageLoadError, match="decompression bomb: 10000000000 pixels exceeds the limit"):
        decode_image(path)
    assert picture_bytes(path) == 4 * 100_000 * 100_000
    assert loads == []  # neither the decode nor the size estimate touched the pixels
