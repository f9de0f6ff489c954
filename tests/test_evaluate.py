"""`camcli evaluate`: the evaluator on a fake explainer whose numbers are known by hand, then the command
end to end on the embedded demo model and generated scenes (tables, JSON, CSV, gates, exit codes)."""

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import invoke
from conftest import SHARED_PHOTOS, needs_shared_imagenet
from PIL import Image
from scipy import ndimage

from camcli.errors import UsageError
from camcli.evaluate.evaluation import (
    METRICS,
    EvaluationOptions,
    boxes_by_class,
    class_slots,
    evaluate,
    evaluation_classes,
    format_box_table,
    parse_gate,
    scored_classes,
)
from camcli.evaluate.metrics import box_iou
from camcli.evaluate.truth import TruthBox
from camcli.explain.explainer import ClassMap, ImageExplanation, Prediction
from camcli.models.demo import CLASSES
from camcli.models.demo.scenes import make_scene
from camcli.runs.discovery import discover


def save(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


# --- the evaluator on a fake explainer ------------------------------------------------------------

SQUARE = (4, 4, 8, 8)  # the red square of every fake image, (x0, y0, x1, y1)


class FakeExplainer:
    """The Explainer API the evaluator uses, on 16x16 images. Class 0 ("circle") scores the mean red of
    the square's pixels, class 1 ("square") one minus that; class 0's map is the red channel and
    class 1's map is empty."""

    def __init__(self, name="fake"):
        self.loaded = SimpleNamespace(name="fake-model", labels=["circle", "square"], input_size=(16, 16))
        self.method = SimpleNamespace(name=name, needs_gradients=False)
        self.layer = "conv"
        self.requests = ["top1"]
        self.step_signature = (name,)  # fakes share no step
        self.scored = 0
        self.asked = []  # the class slots evaluate passed, per call

    def preprocess(self, images):
        return np.stack(images).astype(np.float32) / 255.0

    def class_scores(self, batch):
        self.scored += len(batch)
        x0, y0, x1, y1 = SQUARE
        red = batch[:, y0:y1, x0:x1, 0].mean(axis=(1, 2))
        return np.stack([red, 1.0 - red], axis=1)

    def explain_batch(self, batch, class_ids=None):
        self.asked.append(None if class_ids is None else class_ids.tolist())
        results = []
        for image, scores in zip(batch, self.class_scores(batch), strict=True):
            order = np.argsort(-scores, kind="stable")
            predictions = [Prediction(rank + 1, int(i), self.loaded.labels[i], float(scores[i]))
                           for rank, i in enumerate(order)]
            red = image[..., 0].astype(np.float32)
            maps = [ClassMap(self.method.name, self.layer, 0, "circle", float(scores[0]), red, 1.0, False),
                    ClassMap(self.method.name, self.layer, 1, "square", float(scores[1]),
                             np.zeros_like(red), 0.0, True)]
            results.append(ImageExplanation(predictions, maps))
        return results


def fake_image():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    x0, y0, x1, y1 = SQUARE
    rgb[y0:y1, x0:x1, 0] = 255
    return rgb


@pytest.fixture
def fake_run(tmp_path):
    for name in ("labelled", "unlabelled", "wrong_class", "no_truth", "outside"):
        save(tmp_path / "images" / f"{name}.png", fake_image())
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    truth = {
        "labelled.png": [TruthBox(*SQUARE, "circle")],
        "unlabelled.png": [TruthBox(*SQUARE)],
        "wrong_class.png": [TruthBox(*SQUARE, "1")],  # class 1 ("square") by index
        "outside.png": [TruthBox(20, 20, 30, 30, "circle")],
        "broken.png": [TruthBox(*SQUARE, "circle")],
    }
    tasks, skipped = discover([tmp_path / "images"], tmp_path / "out")
    # The truth's classes are explained (the ground-truth-known protocol), so wrong_class.png gets class 1's map.
    options = EvaluationOptions(tmp_path / "out", steps=16, score_batch_size=5, blur_sigma=1.0,
                                gates=[parse_gate("pointing=0.7", "under"), parse_gate("loc_error=0.5", "over")],
                                truth_name="truth.json", explain_class="truth")
    failures = []
    report = evaluate([FakeExplainer()], tasks, truth, options, skipped,
                      on_failure=lambda image, reason: failures.append((image, reason)))
    return report, failures, tmp_path


def test_rows_by_hand(fake_run):
    report, _, _ = fake_run
    rows = {row["image"].rsplit("/", 1)[1]: row for row in report.rows}
    assert sorted(rows) == ["labelled.png", "unlabelled.png", "wrong_class.png"]
    # The map is 1 exactly on the true box: a perfect score.
    labelled = rows["labelled.png"]
    assert (labelled["class_index"], labelled["class_source"], labelled["truth_label"]) == (0, "truth", "circle")
    assert labelled["pointing"] and labelled["energy"] == 1.0 and labelled["iou"] == 1.0 and labelled["corloc"]
    assert labelled["box"] == list(SQUARE) and labelled["loc_error"] is False
    # Deletion: step 1 of 16 removes the 16 square pixels, so the curve is 1, 0, 0, ...: one triangle.
    assert labelled["deletion"] == pytest.approx(0.5 / 16)
    # Insertion starts from the blurred image and puts the square back at step 1.
    blurred = ndimage.gaussian_filter(fake_image() / 255.0, sigma=(1.0, 1.0, 0))[4:8, 4:8, 0].mean()
    assert labelled["insertion"] == pytest.approx((blurred + 1) / 2 / 16 + 15 / 16, rel=1e-5)
    # The image times its map is the image: O = Y, so no drop and no increase.
    assert labelled["masked_score"] == labelled["score"] == 1.0
    assert labelled["average_drop"] == 0.0 and labelled["confidence_increase"] is False
    # Without a label the top-1 class is explained, and there is no localization error to report.
    unlabelled = rows["unlabelled.png"]
    assert (unlabelled["class_index"], unlabelled["class_source"], unlabelled["loc_error"]) == (0, "top1", None)
    # Class 1's map is empty: a miss everywhere, and a localization error (the top-1 class is circle).
    wrong = rows["wrong_class.png"]
    assert (wrong["class_index"], wrong["label"], wrong["empty"]) == (1, "square", True)
    assert not wrong["pointing"] and wrong["energy"] == 0.0 and wrong["box"] is None and wrong["iou"] == 0.0
    assert wrong["loc_error"] is True
    # Removing rows top to bottom (ties keep row-major order) reaches the square's rows at steps 5..8:
    # class 1 scores 0, 0, 0, 0, 0, 0.25, 0.5, 0.75, then 1 for the last 8 steps.
    assert wrong["deletion"] == pytest.approx((0.125 + 0.375 + 0.625 + 0.875 + 8) / 16)
    # Y = 0 (nothing to drop); the black masked image makes class 1 certain: an increase.
    assert wrong["score"] == 0.0 and wrong["masked_score"] == 1.0
    assert wrong["average_drop"] == 0.0 and wrong["confidence_increase"] is True


def test_method_summary_is_the_mean_of_the_rows(fake_run):
    report, _, _ = fake_run
    metrics = report.methods["fake"]["metrics"]
    assert report.methods["fake"]["rows"] == 3 and report.methods["fake"]["layer"] == "conv"
    for name in ("pointing", "energy", "iou", "corloc"):
        assert metrics[name] == pytest.approx(2 / 3)
    assert metrics["loc_error"] == pytest.approx(0.5)  # over the two rows with a known class
    assert metrics["deletion"] == pytest.approx((0.5 / 16 * 2 + 10 / 16) / 3)
    assert metrics["average_drop"] == 0.0 and metrics["confidence_increase"] == pytest.approx(1 / 3)
    assert list(metrics) == list(METRICS)


def test_images_without_truth_are_skipped_and_bad_ones_fail(fake_run):
    report, failures, _ = fake_run
    assert [item["image"].rsplit("/", 1)[1] for item in report.without_truth] == ["no_truth.png"]
    assert report.without_truth[0]["reason"] == "no ground truth"
    assert [image.rsplit("/", 1)[1] for image, _ in failures] == ["broken.png", "outside.png"]
    assert failures[0][1] and "\n" not in failures[0][1]  # the decoder's one-line reason
    assert failures[1][1] == ("truth box [20, 20, 30, 30] lies outside the 16x16 image; "
                              "are the boxes in this image's pixels?")
    assert report.failures == [{"image": image, "error": reason} for image, reason in failures]
    assert (report.images, report.evaluated) == (6, 3)


def test_gates_and_their_messages(fake_run):
    report, _, _ = fake_run
    [pointing, loc_error] = report.gates
    assert not pointing.passed
    assert pointing.message() == "fake pointing 0.6667 is below --fail-under pointing=0.7"
    assert loc_error.passed and loc_error.message() == "fake loc_error 0.5 is not above --fail-over loc_error=0.5"
    assert report.failed_gates == [pointing]


def test_json_and_csv_files(fake_run):
    report, _, folder = fake_run
    record = json.loads((folder / "out" / "evaluation.json").read_text("utf-8"))
    assert list(record) == ["camcli_version", "model", "truth", "options", "images", "evaluated", "without_truth",
                            "failed", "failures", "methods", "gates", "passed", "interrupted", "warnings", "rows"]
    assert record["model"] == "fake-model" and record["truth"] == "truth.json" and record["passed"] is False
    assert record["options"]["steps"] == 16 and record["options"]["box_threshold"] == 0.2
    assert record["methods"]["fake"]["metrics"]["pointing"] == pytest.approx(2 / 3)
    assert record["gates"][0] == {"option": "--fail-under", "metric": "pointing", "bound": 0.7, "method": "fake",
                                  "value": pytest.approx(2 / 3), "passed": False}
    assert len(record["rows"]) == 3
    with open(folder / "out" / "evaluation.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 3
    wrong = next(line for line in lines if line["image"].endswith("wrong_class.png"))
    assert (wrong["pointing"], wrong["corloc"], wrong["loc_error"], wrong["box_x0"]) == ("0", "0", "1", "")
    assert wrong["truth_boxes"] == "1" and wrong["label"] == "square"
    assert not list((folder / "out").glob(".camcli.*"))  # no temporary file left behind


def test_steps_zero_skips_the_curves_and_their_passes(tmp_path):
    save(tmp_path / "a.png", fake_image())
    tasks, _ = discover([tmp_path / "a.png"], tmp_path / "out")
    explainer = FakeExplainer()
    report = evaluate([explainer], tasks, {"a.png": [TruthBox(*SQUARE, "circle")]}, EvaluationOptions(steps=0))
    assert report.methods["fake"]["metrics"]["deletion"] is None
    assert report.rows[0]["insertion"] is None
    assert explainer.scored == 2  # the explanation, and the image times its map: no curve passes
    assert not (tmp_path / "out").exists()  # no out_dir: nothing written
    table = format_box_table(report).splitlines()
    assert table[0].split() == ["metric", "fake", "better"]
    assert table[1].split() == ["pointing", "1.000", "higher"]
    assert [line.split() for line in table if line.startswith("deletion")] == [["deletion", "-", "lower"]]
    assert table[-1].split() == ["rows", "1"]


def test_several_methods_are_compared_side_by_side(tmp_path):
    save(tmp_path / "a.png", fake_image())
    tasks, _ = discover([tmp_path / "a.png"], tmp_path / "out")
    truth = {"a.png": [TruthBox(*SQUARE, "circle")]}
    report = evaluate([FakeExplainer("one"), FakeExplainer("two")], tasks, truth, EvaluationOptions(steps=2))
    assert list(report.methods) == ["one", "two"]
    assert [row["method"] for row in report.rows] == ["one", "two"]
    assert format_box_table(report).splitlines()[0].split() == ["metric", "one", "two", "better"]
    with pytest.raises(UsageError, match="`methods=one` is given twice"):
        evaluate([FakeExplainer("one"), FakeExplainer("one")], tasks, truth, EvaluationOptions())


def test_labels_the_model_does_not_know_are_scored_on_the_top1_class_with_a_warning(tmp_path):
    save(tmp_path / "a.png", fake_image())
    tasks, _ = discover([tmp_path / "a.png"], tmp_path / "out")
    truth = {"a.png": [TruthBox(*SQUARE, "kitten"), TruthBox(0, 0, 2, 2, "square")]}
    report = evaluate([FakeExplainer()], tasks, truth, EvaluationOptions(steps=0, explain_class="truth"))
    assert [(row["truth_label"], row["class_index"], row["class_source"], row["loc_error"]) for row in report.rows] == [
        ("kitten", 0, "top1", None), ("square", 1, "truth", True)]
    assert report.warnings == ["the model has no class 'kitten' (truth labels): their boxes were scored against "
                               "each image's top-1 class, without loc_error"]


def test_no_image_with_truth_is_a_usage_error(tmp_path):
    save(tmp_path / "a.png", fake_image())
    tasks, _ = discover([tmp_path / "a.png"], tmp_path / "out")
    with pytest.raises(UsageError, match=r"none of the 1 images has boxes in t.csv \(e.g. .*a.png vs 'b.png'\)"):
        evaluate([FakeExplainer()], tasks, {"b.png": [TruthBox(0, 0, 1, 1)]}, EvaluationOptions(truth_name="t.csv"))


def test_each_image_is_explained_for_its_own_truth_classes():
    labels = ["circle", "square", "bird_of_prey"]
    truth = {"a.png": [TruthBox(0, 0, 1, 1, "Bird of prey")], "b.png": [TruthBox(0, 0, 1, 1, "0")]}
    assert evaluation_classes(truth, labels, explain_class="truth") == ["top1"]  # one slot: no image needs two
    truth["c.png"] = [TruthBox(0, 0, 1, 1, "kitten"), TruthBox(0, 0, 1, 1, "square")]
    assert evaluation_classes(truth, labels, explain_class="truth") == ["top1", "top1"]
    groups = [boxes_by_class(truth[name], labels) for name in ("a.png", "b.png", "c.png")]
    # kitten is unknown to the model: -1, the image's top-1 class; a single class is repeated (no extra map)
    assert class_slots([scored_classes(t, "truth") for t in groups], 2).tolist() == [[2, 2], [0, 0], [-1, 1]]
    # Explaining the prediction needs one map per image, whatever the truth says: the top-1 class (-1).
    assert evaluation_classes(truth, labels) == ["top1"]
    assert class_slots([scored_classes(t) for t in groups], 2).tolist() == [[-1, -1]] * 3
    with pytest.raises(UsageError, match="`explain_class` 'guess': choose predicted or truth"):
        evaluation_classes(truth, labels, explain_class="guess")
    with pytest.raises(UsageError, match="`explain_class` 'guess'"):
        EvaluationOptions(explain_class="guess")


def test_by_default_the_predicted_class_is_scored_against_the_truth_boxes(tmp_path):
    """A model that predicts circle for a square looks at the square when it does: its circle map is what
    is scored, so pointing hits, and the wrong class still counts as a localization error."""
    save(tmp_path / "wrong_class.png", fake_image())
    tasks, _ = discover([tmp_path], tmp_path / "out")
    explainer = FakeExplainer()
    report = evaluate([explainer], tasks, {"wrong_class.png": [TruthBox(*SQUARE, "square")]},
                      EvaluationOptions(steps=0))
    (row,) = report.rows
    assert explainer.asked == [[[-1]]]
    assert (row["class_index"], row["label"], row["class_source"]) == (0, "circle", "top1")
    assert row["truth_label"] == "square"
    assert row["pointing"] and row["iou"] == 1.0 and row["corloc"] and row["loc_error"] is True
    assert report.options.record()["explain_class"] == "predicted"


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("under", "pointing", "--fail-under 'pointing' is not METRIC=VALUE, e.g. --fail-under pointing=0.8"),
    ("under", "pointy=0.8", "--fail-under pointy=0.8: unknown metric 'pointy'; choose one of "
                            "pointing, energy, iou, corloc, loc_error, deletion, insertion, roadmorf, roadlerf, "
                            "roadcombined, average_drop, confidence_increase, confidence_change, relevance_mass, "
                            "relevance_rank, random_logit"),
    ("under", "iou=high", "--fail-under iou=high: 'high' is not a number; write e.g. iou=0.8"),
    ("under", "pointing=80", "--fail-under pointing=80: metrics are fractions in [0, 1]; for 80% write pointing=0.8"),
    ("under", "loc_error=0.3", "--fail-under loc_error=0.3: lower is better for loc_error, so bound it with "
                               "--fail-over loc_error=VALUE"),
    ("over", "corloc=0.3", "--fail-over corloc=0.3: higher is better for corloc, so bound it with "
                           "--fail-under corloc=VALUE"),
])
def test_gate_parsing_errors(kind, text, message):
    with pytest.raises(UsageError) as caught:
        parse_gate(text, kind)
    assert str(caught.value) == message


def test_gate_parsing_accepts_spaces_dashes_and_case():
    gate = parse_gate(" Loc-Error = 0.25", "over")
    assert (gate.metric, gate.bound, gate.kind, gate.text, gate.option) == (
        "loc_error", 0.25, "over", "loc_error=0.25", "--fail-over")


# --- the command on the demo model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def boxed_scenes(tmp_path_factory):
    """One 96x96 scene per demo class with truth.csv, plus a scene the truth does not mention."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(31)
    lines = ["image,x0,y0,x1,y1,label"]
    for index, label in enumerate(CLASSES):
        scene = make_scene(rng, size=96, class_index=index)
        save(folder / "images" / f"{label}.png", scene.image)
        lines.append(",".join(str(v) for v in (f"{label}.png", *scene.box, label)))
    save(folder / "images" / "extra.png", make_scene(rng, size=96).image)
    (folder / "truth.csv").write_text("\n".join(lines) + "\n", "utf-8")
    return folder


@pytest.fixture(scope="module")
def demo_run(boxed_scenes):
    out = boxed_scenes / "out"
    result = invoke("evaluate", boxed_scenes / "images", "--truth", boxed_scenes / "truth.csv", "--model", "demo",
                    "--method", "gradcam", "--method", "cam", "--steps", 4, "--road", "--random-logit", "--out", out,
                    "--fail-under", "pointing=0.2", "--fail-over", "loc_error=1")
    return result, out


def test_demo_run_passes_a_low_bound(demo_run):
    result, out = demo_run
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("camcli: ") for line in lines), lines
    assert lines[0] == f"camcli: skipped: {out.parent / 'images' / 'extra.png'}: no ground truth"
    assert lines[-1] == f"camcli: evaluated 6 of 7 images (0 failed, 1 without truth) -> {out}"


def test_demo_table_lists_every_metric_for_both_methods(demo_run):
    result, out = demo_run
    record = json.loads((out / "evaluation.json").read_text("utf-8"))
    table = result.stdout.splitlines()
    assert table[0].split() == ["metric", "gradcam", "cam", "better"]
    assert [line.split()[0] for line in table[1:]] == [*METRICS, "rows"]
    for line in table[1:-1]:
        name, *values, better = line.split()
        expected = [f"{record['methods'][m]['metrics'][name]:.3f}" for m in ("gradcam", "cam")]
        assert values == expected
        assert better == ("higher" if METRICS[name].higher_is_better else "lower")
    assert table[-1].split() == ["rows", "6", "6"]


def test_demo_json_numbers(demo_run, boxed_scenes):
    _, out = demo_run
    record = json.loads((out / "evaluation.json").read_text("utf-8"))
    assert (record["images"], record["evaluated"], record["failed"]) == (7, 6, 0)
    assert record["passed"] is True and len(record["gates"]) == 4
    lines = (boxed_scenes / "truth.csv").read_text("utf-8").splitlines()[1:]
    truth = {row[0]: [float(v) for v in row[1:5]] for row in csv.reader(lines)}
    for method in ("gradcam", "cam"):
        rows = [row for row in record["rows"] if row["method"] == method]
        assert len(rows) == 6 and record["methods"][method]["layer"] == "conv6"
        for row in rows:
            name = row["image"].rsplit("/", 1)[1]
            # The predicted class is explained, and the demo model gets every scene right.
            assert row["label"] == row["truth_label"] == name[:-4] and row["class_source"] == "top1"
            assert row["truth_boxes"] == [truth[name]]
            iou = box_iou(row["box"], truth[name]) if row["box"] else 0.0
            assert row["iou"] == pytest.approx(iou) and row["corloc"] == (iou >= 0.5)
            assert row["loc_error"] == (row["top1_index"] != row["class_index"] or iou < 0.5)
            for metric in ("energy", "deletion", "insertion", "average_drop"):
                assert 0.0 <= row[metric] <= 1.0
        metrics = record["methods"][method]["metrics"]
        assert metrics["pointing"] == pytest.approx(np.mean([row["pointing"] for row in rows]))
        assert metrics["iou"] == pytest.approx(np.mean([row["iou"] for row in rows]))
        assert metrics["pointing"] >= 0.5  # the demo model looks at the shapes
        assert metrics["insertion"] > metrics["deletion"]  # its maps rank the pixels that matter first
        assert metrics["roadlerf"] > metrics["roadmorf"]  # and so does ROAD (Rong et al. 2022)
    with open(out / "evaluation.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_demo_impossible_bound_exits_1_and_names_metric_method_value_and_bound(boxed_scenes, tmp_path):
    result = invoke("evaluate", boxed_scenes / "images", "--truth", boxed_scenes / "truth.csv", "--model", "demo",
                    "--steps", 0, "--out", tmp_path, "--fail-under", "iou=1", "--fail-under", "pointing=0")
    assert result.exit_code == 1, result.stderr
    record = json.loads((tmp_path / "evaluation.json").read_text("utf-8"))
    value = record["methods"]["gradcam"]["metrics"]["iou"]
    assert value < 1.0 and record["passed"] is False
    failed = [line for line in result.stderr.splitlines() if "--fail-under" in line]
    assert failed == [f"camcli: gradcam iou {value:.4g} is below --fail-under iou=1"]
    assert [line.split()[0] for line in result.stdout.splitlines() if "-" in line.split()[1:2]] == [
        "deletion", "insertion", "roadmorf", "roadlerf", "roadcombined", "random_logit"]


def test_unreadable_image_is_a_failure_not_a_crash(boxed_scenes, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "circle.png").write_bytes((boxed_scenes / "images" / "circle.png").read_bytes())
    (images / "square.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = invoke("evaluate", images, "--truth", boxed_scenes / "truth.csv", "--model", "demo", "--steps", 0,
                    "--out", tmp_path / "out")
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("camcli: failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"camcli: failed: {images / 'square.png'}: ")
    assert "Traceback" not in result.stderr
    record = json.loads((tmp_path / "out" / "evaluation.json").read_text("utf-8"))
    assert record["evaluated"] == 1 and record["failed"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--fail-under", "accuracy=0.5"], "camcli: error: --fail-under accuracy=0.5: unknown metric 'accuracy'; "
                                       "choose one of pointing, energy, iou, corloc, loc_error, deletion, insertion, "
                                       "roadmorf, roadlerf, roadcombined, average_drop, confidence_increase, "
                                       "confidence_change, relevance_mass, relevance_rank, random_logit"),
    (["--fail-under", "loc_error=0.5"], "camcli: error: --fail-under loc_error=0.5: lower is better for loc_error, "
                                        "so bound it with --fail-over loc_error=VALUE"),
    (["--steps", "0", "--fail-under", "insertion=0.5"],
     "camcli: error: --fail-under insertion=0.5 needs the deletion/insertion curves; drop --steps 0"),
])
def test_usage_errors_exit_2_before_loading_the_model(boxed_scenes, tmp_path, args, message):
    result = invoke("evaluate", boxed_scenes / "images", "--truth", boxed_scenes / "truth.csv",
                    "--model", "no-such-model", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_truth_that_names_no_image_exits_2(boxed_scenes, tmp_path):
    truth = tmp_path / "other.csv"
    truth.write_text("elsewhere/cat.jpg,0,0,5,5,circle\n", "utf-8")
    result = invoke("evaluate", boxed_scenes / "images" / "circle.png", "--truth", truth, "--model", "no-such-model",
                    "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"camcli: error: none of the 1 images has boxes in {truth} (e.g. {boxed_scenes / 'images' / 'circle.png'} vs "
        "'elsewhere/cat.jpg'); name images by file name or by path relative to the truth file")


def test_loc_error_gate_needs_labels(boxed_scenes, tmp_path):
    truth = tmp_path / "unlabelled.csv"
    truth.write_text("circle.png,0,0,5,5\n", "utf-8")
    result = invoke("evaluate", boxed_scenes / "images", "--truth", truth, "--model", "no-such-model",
                    "--out", tmp_path / "out", "--fail-over", "loc_error=0.5")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"camcli: error: --fail-over loc_error=0.5 needs class labels in the ground "
                                     f"truth, and {truth} has none")


@pytest.mark.slow
def test_help_has_an_example_and_the_modules_do_not_import_tensorflow():
    result = invoke("evaluate", "--help")
    assert result.exit_code == 0 and "Example:" in result.stdout and "--fail-over" in result.stdout
    code = ("import sys, camcli.cli, camcli.evaluate.evaluation, camcli.evaluate.truth, camcli.evaluate.metrics; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.slow
@needs_shared_imagenet
def test_real_mobilenetv2_points_at_the_hand_drawn_boxes(tmp_path):
    """Hand-drawn boxes (as in test_real_imagenet.py) around the cat and the cup, in a VOC-free JSON."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({
        "chelsea.png": [{"box": [0, 0, 375, 300], "label": "Egyptian_cat"}],
        "coffee.png": [{"box": [75, 15, 480, 390], "label": "espresso"}],
    }), "utf-8")
    images = [SHARED_PHOTOS / "chelsea.png", SHARED_PHOTOS / "coffee.png"]
    result = invoke("evaluate", *images, "--truth", truth, "--model", "mobilenetv2", "--steps", 0,
                    "--out", tmp_path / "out", "--fail-under", "pointing=1", "--fail-over", "loc_error=0")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "evaluation.json").read_text("utf-8"))
    assert [row["top1_label"] for row in record["rows"]] == ["Egyptian_cat", "espresso"]
    assert all(row["class_source"] == "top1" and row["corloc"] for row in record["rows"])


def test_evaluate_takes_the_precision(boxed_scenes, tmp_path):
    result = invoke("evaluate", boxed_scenes / "images", "--truth", boxed_scenes / "truth.csv", "--model", "demo",
                    "--method", "gradcam", "--steps", 4, "--precision", "bfloat16", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "evaluation.json").read_text("utf-8"))
    assert record["evaluated"] == 6 and record["failed"] == 0
    assert 0.0 <= record["methods"]["gradcam"]["metrics"]["pointing"] <= 1.0
