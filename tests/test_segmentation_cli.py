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


# --- evaluate --truth-masks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def masked_scenes(tmp_path_factory):
    """12 generated scenes (2 per class) in images/, their VOC masks in masks/."""
    from camcli.models.demo.samples import write_segmentation_samples

    root = tmp_path_factory.mktemp("masks")
    write_segmentation_samples(root, count=12, seed=5)
    return root


def _copy_scenes(masked_scenes, folder, names=None):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((masked_scenes / "images").glob("*.png")):
        if names is None or image.stem in names:
            (folder / "images" / image.name).write_bytes(image.read_bytes())
            (folder / "masks" / image.name).write_bytes((masked_scenes / "masks" / image.name).read_bytes())
    return folder / "images", folder / "masks"


def test_evaluate_truth_masks_reports_iou_per_class_miou_and_the_sweep(masked_scenes, tmp_path):
    out = tmp_path / "out"
    result = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
                    "--method", "gradcam", "--bg-threshold", "0.4", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "evaluated 12 of 12 images" in result.stderr
    report = json.loads((out / "evaluation.json").read_text())
    summary = report["methods"]["gradcam"]
    assert report["kind"] == "segmentation" and report["options"]["bg_threshold"] == 0.4
    assert {entry["label"] for entry in summary["iou_per_class"]} == {"background", "circle", "square", "triangle",
                                                                      "star", "cross", "ring"}
    ious = [entry["iou"] for entry in summary["iou_per_class"]]
    assert summary["metrics"]["miou"] == pytest.approx(np.mean(ious))
    assert 0.2 < summary["metrics"]["miou"] < 1.0
    sweep = {entry["bg_threshold"]: entry["miou"] for entry in summary["bg_sweep"]}
    assert sweep[0.4] == pytest.approx(summary["metrics"]["miou"])
    assert summary["best_miou"] == pytest.approx(max(sweep.values()))
    assert sweep[0.95] < summary["best_miou"]  # almost nothing is foreground at 0.95
    # The table shows the same figures; the CSV holds the images, classes, mIoU and sweep.
    assert f"{summary['metrics']['miou']:.3f}" in result.stdout and "mIoU by bg_threshold" in result.stdout
    rows = (out / "evaluation.csv").read_text().splitlines()
    assert rows[0] == "record,image,method,class_index,label,bg_threshold,iou,relevance_mass,relevance_rank"
    kinds = [row.split(",")[0] for row in rows[1:]]
    assert kinds.count("image") == 12 and kinds.count("class") == 7 and kinds.count("miou") == 1
    assert kinds.count("sweep") == len(sweep)
    assert all(len(row.split(",")) == 9 for row in rows)


def test_evaluate_truth_masks_scores_relevance_mass_and_rank_against_the_class_pixels(masked_scenes, tmp_path):
    """Quantus's relevance mass and rank with the mask's class pixels as the truth: each image's figures are
    recomputed here from the heatmap `explain --save-heatmap` writes for the same class, and the method's
    figure is their mean; both gate the build."""
    out = tmp_path / "out"
    result = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
                    "--out", out, "--fail-under", "relevance_mass=0.3", "--fail-under", "relevance_rank=0.99")
    assert result.exit_code == 1, result.stderr  # the rank gate fails, the mass gate holds
    assert "gradcam relevance_rank" in result.stderr and "gradcam relevance_mass" not in result.stderr
    report = json.loads((out / "evaluation.json").read_text())
    metrics = report["methods"]["gradcam"]["metrics"]
    rows = report["rows"]
    assert metrics["relevance_mass"] == pytest.approx(np.mean([row["relevance_mass"] for row in rows]))
    assert metrics["relevance_rank"] == pytest.approx(np.mean([row["relevance_rank"] for row in rows]))
    assert 0.3 < metrics["relevance_mass"] < 1.0 and 0.2 < metrics["relevance_rank"] < 0.99
    assert "relevance mass" in result.stdout and f"{metrics['relevance_mass']:.3f}" in result.stdout
    explained = tmp_path / "explained"
    assert invoke("explain", masked_scenes / "images" / "star_1.png", "--model", "demo", "--class", "star",
                  "--save-heatmap", "--out", explained, "-q").exit_code == 0
    [heatmap_file] = explained.glob("star_1*.npy")
    truth = read_palette_mask(masked_scenes / "masks" / "star_1.png")
    heatmap = np.load(heatmap_file)
    picture = np.asarray(Image.fromarray(heatmap.astype(np.float32)).resize(truth.shape[::-1], Image.BILINEAR))
    picture = np.clip(picture, 0, 1).astype(np.float64)
    star = truth == 4
    row = next(row for row in rows if row["image"].endswith("star_1.png"))
    mass = picture[star & (truth != 255)].sum() / picture[truth != 255].sum()
    assert row["relevance"]["star"]["relevance_mass"] == pytest.approx(mass, abs=1e-3)


def test_the_image_miou_matches_the_label_map_explain_writes(masked_scenes, tmp_path):
    """evaluate and explain --save-segmentation make the same label map: the per-image IoU from the
    evaluation equals the IoU of explain's file against the mask."""
    out = tmp_path / "eval"
    invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
           "--out", out)
    rows = json.loads((out / "evaluation.json").read_text())["rows"]
    explained = tmp_path / "explained"
    image = masked_scenes / "images" / "star_1.png"
    assert invoke("explain", image, "--model", "demo", "--class", "star", "--save-segmentation",
                  "--out", explained, "-q").exit_code == 0
    labels = read_palette_mask(explained / "star_1.gradcam.segmentation.png")
    truth = read_palette_mask(masked_scenes / "masks" / "star_1.png")
    star = truth == 4  # value 4: class 3, star
    ours = labels == 1
    expected = (ours & star).sum() / (ours | star).sum()
    row = next(row for row in rows if row["image"].endswith("star_1.png"))
    assert row["iou"]["star"] == pytest.approx(expected, abs=1e-9)


def test_fail_under_miou_gates_the_build(masked_scenes, tmp_path):
    passed = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
                    "--fail-under", "miou=0.1", "--out", tmp_path / "a")
    failed = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
                    "--fail-under", "miou=0.99", "--out", tmp_path / "b")
    assert passed.exit_code == 0 and failed.exit_code == 1
    assert "gradcam miou" in failed.stderr and "below --fail-under miou=0.99" in failed.stderr
    wrong = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks", "--model", "demo",
                   "--fail-under", "pointing=0.5", "--out", tmp_path / "c")
    assert wrong.exit_code == 2 and "choose one of miou" in only_line(wrong)


def test_refinements_apply_to_evaluate(masked_scenes, tmp_path):
    figures = {}
    for how in ("none", "slic"):
        out = tmp_path / how
        result = invoke("evaluate", masked_scenes / "images", "--truth-masks", masked_scenes / "masks",
                        "--model", "demo", "--refine", how, "--out", out)
        assert result.exit_code == 0, result.stderr
        report = json.loads((out / "evaluation.json").read_text())
        assert report["options"]["refine"] == how
        figures[how] = report["methods"]["gradcam"]["metrics"]["miou"]
    assert figures["none"] != figures["slic"]


def test_a_mask_of_another_size_is_one_line_and_exit_2(masked_scenes, tmp_path):
    images, masks = _copy_scenes(masked_scenes, tmp_path / "set", {"star_1", "ring_1"})
    mask = masks / "ring_1.png"
    with Image.open(mask) as picture:
        picture.resize((picture.width + 3, picture.height)).save(mask)
    result = invoke("evaluate", images, "--truth-masks", masks, "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = only_line(result)
    assert "ring_1.png" in line and "must have its image's size" in line


def test_an_unknown_mask_value_is_one_line_and_exit_2_and_mask_labels_name_it(masked_scenes, tmp_path):
    images, masks = _copy_scenes(masked_scenes, tmp_path / "set", {"star_1", "ring_1"})
    mask = masks / "ring_1.png"
    values = read_palette_mask(mask)
    with Image.open(mask) as picture:
        palette = picture.getpalette()
    renumbered = Image.fromarray(np.where(values == 6, 40, values).astype(np.uint8), "P")
    renumbered.putpalette(palette)
    renumbered.save(mask)
    result = invoke("evaluate", images, "--truth-masks", masks, "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = only_line(result)
    assert "value 40 is not a class" in line and "--mask-labels" in line
    names = tmp_path / "labels.csv"
    names.write_text("value,label\n40,ring\n4,star\n")
    named = invoke("evaluate", images, "--truth-masks", masks, "--mask-labels", names, "--model", "demo",
                   "--out", tmp_path / "named")
    assert named.exit_code == 0, named.stderr
    labels = {e["label"] for e in json.loads((tmp_path / "named" / "evaluation.json").read_text())["methods"][
        "gradcam"]["iou_per_class"]}
    assert labels == {"background", "ring", "star"}


def test_a_corrupt_mask_or_missing_truth_is_a_usage_error(masked_scenes, tmp_path):
    images, masks = _copy_scenes(masked_scenes, tmp_path / "set", {"star_1"})
    (masks / "star_1.png").write_bytes(b"not a png")
    result = invoke("evaluate", images, "--truth-masks", masks, "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "cannot read it as a segmentation mask" in only_line(result)
    neither = invoke("evaluate", images, "--model", "demo", "--out", tmp_path / "out")
    assert neither.exit_code == 2 and "--truth" in only_line(neither)
    boxes = invoke("evaluate", images, "--truth", SCENES / "truth.csv", "--refine", "slic", "--model", "demo",
                   "--out", tmp_path / "out")
    assert boxes.exit_code == 2 and "--truth-masks" in only_line(boxes)
