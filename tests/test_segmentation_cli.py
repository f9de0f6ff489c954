"""Label maps through the commands: `explain --save-segmentation` on the demo scenes."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, only_line
from PIL import Image

from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD
from camcli.maps.segmentation import label_map, normalise_maps, voc_palette
from camcli.runs.label_files import read_palette_mask
from camcli.runs.layout import is_camcli_png

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO / "sample_images" / "generated"
TWO_CLASSES = ("--model", "demo", "--method", "gradcam", "--method", "cam", "--class", "top1", "--class", "top2")


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("segmentation")
    result = invoke("explain", SCENES, *TWO_CLASSES, "--save-segmentation", "--save-heatmap", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    return out


def test_one_palette_label_map_per_image_and_method_at_the_original_size(explained):
    scenes = sorted(SCENES.glob("*.png"))
    maps = sorted(explained.glob("*.segmentation.png"))
    assert len(maps) == 2 * len(scenes) == 12
    for scene in scenes:
        for method in ("gradcam", "cam"):
            path = explained / f"{scene.stem}.{method}.segmentation.png"
            with Image.open(path) as picture:
                assert picture.mode == "P" and picture.size == Image.open(scene).size
                assert np.array_equal(np.frombuffer(bytes(picture.getpalette()), np.uint8).reshape(-1, 3)[:256],
                                      voc_palette())
            assert is_camcli_png(path)
            assert set(np.unique(read_palette_mask(path))) <= {0, 1, 2}


def test_the_record_lists_each_value_and_each_map_its_value(explained):
    record = json.loads((explained / "star_1.json").read_text())
    table = record["segmentation"]
    assert table["bg_threshold"] == DEFAULT_BG_THRESHOLD and table["refine"] == "none"
    for method in ("gradcam", "cam"):
        entry = table["maps"][method]
        assert entry["file"] == f"star_1.{method}.segmentation.png"
        assert entry["values"][0] == {"value": 0, "class_index": None, "label": "background"}
        ours = [e for e in record["explanations"] if e["method"] == method]
        assert [v["class_index"] for v in entry["values"][1:]] == [e["class_index"] for e in ours]
        assert [e["segmentation_value"] for e in ours] == [1, 2]
        assert {e["segmentation"] for e in ours} == {entry["file"]}
    top1 = record["predictions"][0]["index"]
    assert table["maps"]["gradcam"]["values"][1]["class_index"] == top1


def test_each_pixel_is_the_argmax_of_the_saved_heatmaps_and_the_threshold(explained):
    """Without refinement the label map is exactly label_map of the normalised maps the run saved."""
    record = json.loads((explained / "cross_1.json").read_text())
    for method in ("gradcam", "cam"):
        entries = sorted((e for e in record["explanations"] if e["method"] == method),
                         key=lambda e: e["segmentation_value"])
        heatmaps = np.stack([np.load(explained / e["heatmap"]) for e in entries])
        expected = label_map(normalise_maps(heatmaps), DEFAULT_BG_THRESHOLD)
        written = read_palette_mask(explained / entries[0]["segmentation"])
        assert np.array_equal(written, expected)
        assert (written == 1).sum() > 0  # the top-1 class covers some of the scene


def test_resume_keeps_label_maps_and_a_new_threshold_or_refinement_recomputes(tmp_path):
    out = tmp_path / "out"
    scene = SCENES / "ring_1.png"
    first = invoke("explain", scene, "--model", "demo", "--save-segmentation", "--out", out)
    assert first.exit_code == 0, first.stderr
    path = out / "ring_1.gradcam.segmentation.png"
    before = read_palette_mask(path)
    again = invoke("explain", scene, "--model", "demo", "--save-segmentation", "--out", out, "--resume")
    assert "1 unchanged and skipped" in again.stderr
    higher = invoke("explain", scene, "--model", "demo", "--save-segmentation", "--bg-threshold", "0.9",
                    "--out", out, "--resume")
    assert "1 recomputed" in higher.stderr
    after = read_palette_mask(path)
    assert (after > 0).sum() < (before > 0).sum()  # a higher background score leaves less foreground
    assert json.loads((out / "ring_1.json").read_text())["segmentation"]["bg_threshold"] == 0.9
    slic = invoke("explain", scene, "--model", "demo", "--save-segmentation", "--refine", "slic", "--out", out,
                  "--resume")
    assert "1 recomputed" in slic.stderr
    assert json.loads((out / "ring_1.json").read_text())["segmentation"]["refine"] == "slic"
    plain = invoke("explain", scene, "--model", "demo", "--out", out, "--resume")
    assert plain.exit_code == 0 and "1 recomputed" in plain.stderr
    assert not path.exists()  # no longer asked for: camcli removes the label map it wrote
    assert "segmentation" not in json.loads((out / "ring_1.json").read_text())


def test_a_foreign_file_at_the_label_map_path_fails_that_image_only(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("ring_1.png", "star_1.png"):
        (images / name).write_bytes((SCENES / name).read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "ring_1.gradcam.segmentation.png"
    Image.new("P", (8, 8)).save(foreign)
    content = foreign.read_bytes()
    result = invoke("explain", images, "--model", "demo", "--save-segmentation", "--out", out)
    assert result.exit_code == 1
    assert "ring_1.gradcam.segmentation.png" in result.stderr and "not written by camcli" in result.stderr
    assert foreign.read_bytes() == content
    assert (out / "star_1.gradcam.segmentation.png").is_file() and not (out / "ring_1.json").exists()


@pytest.mark.parametrize(("option", "value"), [("--bg-threshold", "0.3"), ("--refine", "slic")])
def test_label_map_options_without_save_segmentation_are_a_usage_error(tmp_path, option, value):
    result = invoke("explain", SCENES / "ring_1.png", "--model", "demo", option, value, "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = only_line(result)
    assert option in line and "--save-segmentation" in line
    assert not (tmp_path / "out").exists()


def test_a_bad_threshold_or_refinement_is_refused_by_the_options(tmp_path):
    for args in (("--bg-threshold", "1.5"), ("--refine", "watershed")):
        result = invoke("explain", SCENES / "ring_1.png", "--model", "demo", "--save-segmentation", *args,
                        "--out", tmp_path / "out")
        assert result.exit_code == 2 and args[0] in result.stderr
