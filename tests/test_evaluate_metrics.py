"""evaluate's metrics of issue 32 against hand-computed numpy references on a tiny Keras model built
in code: ROAD (noisy linear imputation solved densely, pixel by pixel), ..."""

import keras
import numpy as np
import pytest

from camcli.evaluate.metrics import (
    ROAD_NEIGHBOURS,
    ROAD_PERCENTILES,
    noisy_linear_imputation,
    road_scores,
)

SIDE = 6


def linear_softmax(classes=3, seed=0):
    """input 6x6x3 -> Flatten -> Dense(classes, softmax), with its weights, for a numpy twin."""
    x = keras.Input((SIDE, SIDE, 3))
    y = keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(x, y)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(weights)
    return model, weights


def numpy_scores(batch, weights):
    kernel, bias = weights
    logits = np.asarray(batch, np.float64).reshape(len(batch), -1) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def dense_imputation(image, removed):
    """ROAD's system written pixel by pixel: sum_n w_n (x_p - x_n) = 0 over the neighbours n inside the
    image, solved densely (no noise)."""
    height, width, _ = image.shape
    unknown = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {pixel: i for i, pixel in enumerate(unknown)}
    system = np.zeros((len(unknown), len(unknown)))
    right = np.zeros((len(unknown), image.shape[2]))
    for i, (y, x) in enumerate(unknown):
        for (dy, dx), weight in ROAD_NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                system[i, i] += weight
                if removed[ny, nx]:
                    system[i, index[(ny, nx)]] -= weight
                else:
                    right[i] += weight * image[ny, nx]
    filled = image.astype(np.float64).copy()
    for (y, x), value in zip(unknown, np.linalg.solve(system, right), strict=True):
        filled[y, x] = value
    return filled


def test_noisy_linear_imputation_solves_roads_system():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (SIDE, SIDE, 3)).astype(np.float32)
    removed = rng.uniform(size=(SIDE, SIDE)) < 0.6
    clean = noisy_linear_imputation(image, removed, noise=0.0)
    assert np.abs(clean - dense_imputation(image, removed)).max() < 1e-5
    assert np.array_equal(clean[~removed], image[~removed])  # kept pixels are untouched
    noisy = noisy_linear_imputation(image, removed, noise=0.01, rng=np.random.default_rng(7))
    noise = (noisy - clean)[removed]
    assert 0.005 < noise.std() < 0.02 and np.array_equal(noisy[~removed], image[~removed])


def test_road_against_a_numpy_reference_on_a_tiny_model():
    model, weights = linear_softmax()
    rng = np.random.default_rng(5)
    image = rng.uniform(0, 1, (SIDE, SIDE, 3)).astype(np.float32)
    saliency = rng.uniform(size=(SIDE, SIDE))
    road = road_scores(lambda batch: model.predict(batch, verbose=0), image, saliency, 1, batch_size=5, noise=0.0)
    # By hand: rank the pixels, impute the top (MoRF) or bottom (LeRF) p% densely, score in numpy.
    order = np.argsort(-saliency.ravel(), kind="stable")
    original = numpy_scores(image[np.newaxis], weights)[0, 1]
    morf, lerf = [], []
    for percentile in ROAD_PERCENTILES:
        count = int(round(percentile / 100 * saliency.size))
        for chosen, curve in ((order[:count], morf), (order[saliency.size - count:], lerf)):
            removed = np.zeros(saliency.size, bool)
            removed[chosen] = True
            imputed = dense_imputation(image, removed.reshape(SIDE, SIDE))
            curve.append(numpy_scores(imputed[np.newaxis], weights)[0, 1] - original)
    assert road.score == pytest.approx(original, abs=1e-5)
    assert np.abs(road.morf_curve - morf).max() < 1e-5 and np.abs(road.lerf_curve - lerf).max() < 1e-5
    assert road.morf == pytest.approx(np.mean(morf), abs=1e-5)
    assert road.combined == pytest.approx((np.mean(lerf) - np.mean(morf)) / 2, abs=1e-5)
    # Seeded noise: the same call gives the same scores.
    again = [road_scores(lambda b: model.predict(b, verbose=0), image, saliency, 1, noise=0.01).combined
             for _ in range(2)]
    assert again[0] == again[1]


# --- in evaluate: rows, summary, gates, CSV and table ----------------------------------------------


@pytest.fixture
def fake_road_run(tmp_path):
    from test_evaluate import SQUARE, FakeExplainer, fake_image, save

    from camcli.evaluate.evaluation import EvaluationOptions, evaluate, parse_gate
    from camcli.evaluate.truth import TruthBox
    from camcli.runs.discovery import discover

    save(tmp_path / "images" / "one.png", fake_image())
    tasks, _ = discover([tmp_path / "images"], tmp_path / "out")
    gates = [parse_gate("roadcombined=-0.5", "under"), parse_gate("roadmorf=0.9", "over")]
    options = EvaluationOptions(tmp_path / "out", steps=0, road=True, gates=gates, explain_class="truth")
    explainer = FakeExplainer()
    report = evaluate([explainer], tasks, {"one.png": [TruthBox(*SQUARE, "circle")]}, options)
    return report, explainer, tmp_path


def test_road_in_evaluate_rows_gates_csv_and_table(fake_road_run):
    from test_evaluate import fake_image

    from camcli.evaluate.evaluation import format_box_table

    report, explainer, tmp_path = fake_road_run
    row = report.rows[0]
    image = explainer.preprocess([fake_image()])[0]
    road = road_scores(explainer.class_scores, image, image[..., 0], 0)
    assert (row["roadmorf"], row["roadlerf"], row["roadcombined"]) == pytest.approx(
        (road.morf, road.lerf, road.combined))
    # The map is the square: removing it first drops the circle score, removing the rest first keeps it.
    assert row["roadmorf"] < -0.5 and row["roadlerf"] > row["roadmorf"]
    assert report.methods["fake"]["metrics"]["roadcombined"] == pytest.approx(road.combined)
    assert [result.passed for result in report.gates] == [True, True]
    header = (tmp_path / "out" / "evaluation.csv").read_text().splitlines()[0].split(",")
    assert {"roadmorf", "roadlerf", "roadcombined"} <= set(header)
    table = format_box_table(report)
    assert any(line.startswith("roadcombined") and line.endswith("higher") for line in table.splitlines())


def test_road_gates_need_road_and_take_negative_bounds(tmp_path):
    from camcli.errors import UsageError
    from camcli.evaluate.evaluation import EvaluationOptions, check_computable, parse_gate

    assert parse_gate("roadcombined=-0.2", "under").bound == -0.2
    with pytest.raises(UsageError, match=r"roadmorf lies in \[-1, 1\]"):
        parse_gate("roadmorf=-1.5", "over")
    with pytest.raises(UsageError, match="needs ROAD: give `road=True`"):
        check_computable([parse_gate("roadlerf=0.1", "under")], EvaluationOptions(), {})


# --- confidence_change, relevance_mass, relevance_rank ----------------------------------------------


def test_relevance_rank_and_mass_by_hand():
    from camcli.evaluate.metrics import energy_in_boxes, relevance_rank

    heatmap = np.array([[0.9, 0.1, 0, 0], [0.8, 0.7, 0, 0], [0, 0, 0.2, 0], [0, 0, 0, 0.5]])
    box = [(0, 0, 2, 2)]  # 0.9, 0.1, 0.8, 0.7: K = 4; the top 4 are 0.9, 0.8, 0.7, 0.5
    assert relevance_rank(heatmap, box) == 0.75
    assert energy_in_boxes(heatmap, box) == pytest.approx(2.5 / 3.2)
    # Quantus's ties: a stable ascending sort, the last K, so the later pixel wins.
    assert relevance_rank(np.ones((2, 2)), [(0, 0, 1, 1)]) == 0.0
    assert relevance_rank(np.ones((2, 2)), [(1, 1, 2, 2)]) == 1.0
    assert relevance_rank(np.zeros((2, 2)), [(0, 0, 1, 1)]) == 0.0  # an empty map ranks nothing


def test_relevance_against_a_mask_leaves_ignored_pixels_out():
    """A segmentation mask's class pixels instead of boxes; pixels marked ignore (VOC's 255) count in neither
    the map's mass nor its ranking."""
    from camcli.evaluate.metrics import energy_in_mask, relevance_rank_in_mask

    heatmap = np.array([[0.9, 0.1, 0.0], [0.8, 0.3, 0.2], [0.0, 0.5, 0.7]])
    inside = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    counted = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=bool)  # the 0.7 is ignored
    assert energy_in_mask(heatmap, inside) == pytest.approx(2.0 / 3.5)
    assert energy_in_mask(heatmap, inside, counted) == pytest.approx(2.0 / 2.8)
    # K = 3 class pixels; all pixels: the top 3 are 0.9, 0.8, 0.7, two inside; 0.7 ignored: 0.9, 0.8, 0.5.
    assert relevance_rank_in_mask(heatmap, inside) == pytest.approx(2 / 3)
    assert relevance_rank_in_mask(heatmap, inside, counted) == pytest.approx(2 / 3)
    assert relevance_rank_in_mask(heatmap + 0.5 * inside, inside, counted) == 1.0  # 1.4, 1.3, 0.8 are inside
    assert energy_in_mask(np.zeros((3, 3)), inside) is None  # an empty map has no mass to share
    assert relevance_rank_in_mask(heatmap, np.zeros((3, 3), bool)) == 0.0


def test_confidence_change_and_relevance_in_evaluate_rows(tmp_path):
    from test_evaluate import SQUARE, FakeExplainer, fake_image, save

    from camcli.evaluate.evaluation import EvaluationOptions, evaluate, format_box_table, parse_gate
    from camcli.evaluate.truth import TruthBox
    from camcli.runs.discovery import discover

    for name in ("labelled", "wrong_class"):
        save(tmp_path / "images" / f"{name}.png", fake_image())
    tasks, _ = discover([tmp_path / "images"], tmp_path / "out")
    truth = {"labelled.png": [TruthBox(*SQUARE, "circle")], "wrong_class.png": [TruthBox(0, 0, 8, 4, "1")]}
    gates = [parse_gate("confidence_change=-0.1", "under"), parse_gate("relevance_rank=0.6", "under"),
             parse_gate("relevance_mass=0.9", "under")]
    options = EvaluationOptions(tmp_path / "out", steps=0, gates=gates, explain_class="truth")
    report = evaluate([FakeExplainer()], tasks, truth, options)
    rows = {row["image"].rsplit("/", 1)[1]: row for row in report.rows}
    # The map is 1 on the square: times the image it is the image (O = Y = 1), all its mass and its
    # 16 top pixels in the box.
    labelled = rows["labelled.png"]
    assert (labelled["confidence_change"], labelled["relevance_mass"], labelled["relevance_rank"]) == (0.0, 1.0, 1.0)
    # Class 1's map is empty: the masked image is black, class 1 scores 1 (Y = 0); no mass, no rank.
    wrong = rows["wrong_class.png"]
    assert (wrong["confidence_change"], wrong["relevance_mass"], wrong["relevance_rank"]) == (1.0, None, 0.0)
    metrics = report.methods["fake"]["metrics"]
    assert (metrics["confidence_change"], metrics["relevance_mass"], metrics["relevance_rank"]) == (0.5, 1.0, 0.5)
    assert [result.passed for result in report.gates] == [True, False, True]
    header = (tmp_path / "out" / "evaluation.csv").read_text().splitlines()[0].split(",")
    assert {"confidence_change", "relevance_mass", "relevance_rank"} <= set(header)
    lines = {line.split()[0]: line.split()[1:] for line in format_box_table(report).splitlines()}
    assert lines["confidence_change"] == ["0.500", "higher"] and lines["relevance_rank"] == ["0.500", "higher"]


# --- random_logit ---------------------------------------------------------------------------------


def test_random_other_class_draws_as_quantus():
    from camcli.evaluate.evaluation import random_other_class

    for own in range(4):
        np.random.seed(42)  # Quantus's RandomLogit, restated
        expected = np.random.choice([c for c in range(4) if c != own])
        assert random_other_class(own, 4) == expected
    assert random_other_class(0, 1) is None


def test_random_logit_on_a_tiny_model(tmp_path):
    from skimage.metrics import structural_similarity as ssim
    from test_evaluate import save
    from tiny_models import SIZE, explainer_for, gap_dense

    from camcli.evaluate.evaluation import EvaluationOptions, evaluate, parse_gate, random_other_class
    from camcli.evaluate.truth import TruthBox
    from camcli.runs.discovery import discover

    rng = np.random.default_rng(2)
    pictures = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    for index, picture in enumerate(pictures):
        save(tmp_path / "images" / f"{index}.png", picture)
    tasks, _ = discover([tmp_path / "images"], tmp_path / "out")
    truth = {f"{index}.png": [TruthBox(0, 0, 4, 4)] for index in range(3)}
    model = gap_dense(classes=5)
    methods = [explainer_for(model, method=m, layer="target", classes=["top1"]) for m in ("gradcam", "gradcam++")]
    options = EvaluationOptions(tmp_path / "out", steps=0, random_logit=True, batch_size=2,
                                gates=[parse_gate("random_logit=1", "over")])
    report = evaluate(methods, tasks, truth, options)
    assert len(report.rows) == 6 and report.gates[0].passed
    for row in report.rows:
        # By hand: explain the picture for its class and for Quantus's other class on their own, SSIM of
        # the two maps scaled to [0, 1] (data range 1, window 7).
        picture = pictures[int(row["image"].rsplit("/", 1)[1][0])][np.newaxis].astype(np.float32)
        other = random_other_class(row["class_index"], 5)
        own_class = explainer_for(model, method=row["method"], layer="target", classes=[str(row["class_index"])])
        off_class = explainer_for(model, method=row["method"], layer="target", classes=[str(other)])
        a, b = (e.explain_batch(picture)[0].maps[0].heatmap.astype(np.float64) for e in (own_class, off_class))
        a, b = (m / m.max() if m.max() > 0 else m for m in (a, b))
        assert a.shape == (SIZE, SIZE)
        expected = 1.0 if np.array_equal(a, b) else ssim(a, b, data_range=1.0, win_size=7)
        assert row["random_logit"] == pytest.approx(expected, abs=1e-5)
    header = (tmp_path / "out" / "evaluation.csv").read_text().splitlines()[0].split(",")
    assert "random_logit" in header and report.methods["gradcam"]["metrics"]["random_logit"] is not None


def test_random_logit_without_scikit_image_is_one_line(tmp_path, monkeypatch):
    import sys

    from test_evaluate import FakeExplainer

    from camcli.errors import UsageError
    from camcli.evaluate.evaluation import EvaluationOptions, evaluate

    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    with pytest.raises(UsageError, match=r"needs scikit-image: pip install 'keras-camcli\[audit\]'"):
        evaluate([FakeExplainer()], [], {}, EvaluationOptions(random_logit=True))


@pytest.mark.parametrize("option", ["road", "random_logit"])
def test_road_and_random_logit_refuse_a_detector_in_one_line(tmp_path, option):
    from test_evaluate import SQUARE, FakeExplainer, fake_image, save

    from camcli.errors import UsageError
    from camcli.evaluate.evaluation import EvaluationOptions, evaluate
    from camcli.evaluate.truth import TruthBox
    from camcli.runs.discovery import discover

    save(tmp_path / "images" / "one.png", fake_image())
    tasks, _ = discover([tmp_path / "images"], tmp_path / "out")
    detector = FakeExplainer()
    detector.detects = True
    with pytest.raises(UsageError, match="on an object detector evaluate scores each matched detection"):
        evaluate([detector], tasks, {"one.png": [TruthBox(*SQUARE)]}, EvaluationOptions(**{option: True}))
