"""The model-parameter randomisation test (Adebayo et al. 2018): the randomised copy never touches the
user's model, the cascade randomises exactly the top layers, the similarities on hand-made maps, the
paper's ordering on the demo model, and `camcli evaluate --sanity` with its gate and sanity.json."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from cli_helpers import invoke, only_line
from conftest import REPO
from PIL import Image
from tiny_models import SIZE, _seeded

import camcli
from camcli.audit.randomise import CascadingRandomisation, checkpoint_depths, weighted_layers
from camcli.audit.sanity import (
    DEFAULT_THRESHOLD,
    MethodSanity,
    compare_maps,
    format_sanity_table,
    rank_correlation,
    split_sanity_gates,
    structural_similarity,
)
from camcli.errors import UsageError
from camcli.runs.files import save_json

SCENES = REPO / "sample_images" / "generated"
SCHEMA = {"camcli_version", "kind", "model", "layer", "class", "images", "seed", "threshold", "depths", "methods",
          "seconds"}
METHOD_SCHEMA = {"spearman", "spearman_abs", "ssim", "score", "passed"}


def batch_norm_model(seed=3):
    """8x8x3 -> conv1 -> bn -> relu -> conv2 'target' (relu) -> GAP -> dense 'head' (softmax)."""
    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU(name="relu")(y)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(3, activation="softmax", name="head")(y)
    model = _seeded(keras.Model(x, y, name="bn_model"), seed)
    bn = model.get_layer("bn")  # a positive variance, so the model computes something sensible
    bn.moving_variance.assign(np.abs(bn.moving_variance.numpy()) + 0.5)
    return model


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


# --- the randomised copy -----------------------------------------------------------------------------


def test_randomising_never_touches_the_users_model(tmp_path):
    model = batch_norm_model()
    before_weights = [w.copy() for w in model.get_weights()]
    before_config = model.get_config()
    before_layers = list(model.layers)
    batch = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    before_scores = model.predict(batch, verbose=0)
    cascade = CascadingRandomisation(model, seed=0)
    cascade.randomise_top(len(cascade.layers))
    for path, rgb in zip(("a.png", "b.png"), batch.astype(np.uint8), strict=True):
        Image.fromarray(rgb).save(tmp_path / path)
    camcli.sanity_paths([tmp_path / "a.png", tmp_path / "b.png"], model=model, out=None,
                        methods=["gradcam", "guidedbackprop"], depths=[1])
    assert cascade.copy is not model and all(a is not b for a, b in zip(cascade.copy.layers, model.layers, strict=True))
    assert list(model.layers) == before_layers and model.get_config() == before_config
    after = model.get_weights()
    assert len(after) == len(before_weights)
    assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(after, before_weights, strict=True))
    np.testing.assert_array_equal(model.predict(batch, verbose=0), before_scores)
    assert not np.allclose(cascade.copy.predict(batch, verbose=0), before_scores)


def test_weighted_layers_run_from_the_output_back_and_skip_layers_without_weights():
    model = batch_norm_model()
    assert [layer.path for layer in weighted_layers(model)] == ["head", "target", "bn", "conv1"]


def test_each_depth_randomises_exactly_the_top_layers_and_keeps_the_moving_statistics():
    model = batch_norm_model()
    names = ["head", "target", "bn", "conv1"]
    cascade = CascadingRandomisation(model, seed=0)
    for depth in range(len(names) + 1):
        cascade.randomise_top(depth)
        changed = [name for name in names
                   if any(not np.array_equal(a, b)
                          for a, b in zip(weights_of(model.get_layer(name)), weights_of(cascade.copy.get_layer(name)),
                                          strict=True))]
        assert changed == names[:depth], depth
        assert cascade.label(depth) == (names[depth - 1] if depth else "none")
    bn, copy_bn = model.get_layer("bn"), cascade.copy.get_layer("bn")
    np.testing.assert_array_equal(copy_bn.moving_mean.numpy(), bn.moving_mean.numpy())
    np.testing.assert_array_equal(copy_bn.moving_variance.numpy(), bn.moving_variance.numpy())
    np.testing.assert_array_equal(copy_bn.gamma.numpy(), np.ones(4))  # the layer's own initializers
    np.testing.assert_array_equal(copy_bn.beta.numpy(), np.zeros(4))
    with pytest.raises(ValueError):
        cascade.randomise_top(1)  # the cascade only goes deeper


def test_the_randomisation_is_seeded_and_cumulative():
    model = batch_norm_model()
    one, two, other = (CascadingRandomisation(model, seed=seed) for seed in (0, 0, 1))
    one.randomise_top(1)
    two.randomise_top(3)
    other.randomise_top(1)
    head = [weights_of(c.copy.get_layer("head")) for c in (one, two, other)]
    assert all(np.array_equal(a, b) for a, b in zip(head[0], head[1], strict=True))  # depth 3 keeps depth 1's values
    assert not np.array_equal(head[0][0], head[2][0])  # another seed, other values
    kernel = two.copy.get_layer("target").kernel.numpy()
    assert 0.1 < kernel.std() < 0.2  # glorot_uniform's: sqrt(6 / (36 + 45)) / sqrt(3); trained: 0.5


@pytest.mark.parametrize(("total", "depths", "expected"), [
    (12, None, [0, 1, 2, 3, 4, 7, 12]),
    (105, None, [0, 1, 3, 6, 16, 41, 105]),
    (3, None, [0, 1, 2, 3]),
    (12, 1, [0, 12]),
    (12, [5, 2], [0, 2, 5, 12]),
])
def test_checkpoint_depths_end_with_every_layer_random(total, depths, expected):
    assert checkpoint_depths(total, depths) == expected


def test_checkpoint_depths_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError, match="`depths` 13 is out of range: the model has 12 weighted layers"):
        checkpoint_depths(12, [13])


# --- similarity of hand-made maps ----------------------------------------------------------------------

MAP = np.random.default_rng(5).normal(size=(7, 7))


def test_identical_maps_are_similar_in_every_way():
    similarity = compare_maps(MAP, MAP.copy())
    assert (similarity.spearman, similarity.spearman_abs, similarity.ssim, similarity.constant) == (1.0, 1.0, 1.0,
                                                                                                      False)


def test_a_map_and_its_negation():
    similarity = compare_maps(MAP, -MAP)
    assert similarity.spearman == pytest.approx(-1.0)
    assert (similarity.spearman_abs, similarity.ssim) == (1.0, 1.0)


def test_a_constant_map_has_correlation_zero_and_is_counted():
    similarity = compare_maps(MAP, np.zeros_like(MAP))
    assert (similarity.spearman, similarity.spearman_abs, similarity.constant) == (0.0, 0.0, True)
    assert np.isfinite(similarity.ssim) and -1.0 <= similarity.ssim <= 1.0
    assert compare_maps(np.zeros((7, 7)), np.zeros((7, 7))) == (1.0, 1.0, 1.0, True)  # equal: nothing changed
    broken = MAP.copy()
    broken[0, 0], broken[1, 1] = np.nan, np.inf  # an overflowing random network: those values count as 0
    assert all(np.isfinite(v) for v in compare_maps(MAP, broken)[:3])


def test_rgb_maps_are_summed_over_their_channels_signed_and_absolute():
    rgb = np.random.default_rng(6).normal(size=(7, 7, 3))
    similarity = compare_maps(rgb, rgb * [1.0, -1.0, 1.0])
    assert similarity.spearman == pytest.approx(rank_correlation(rgb.sum(-1), (rgb * [1, -1, 1]).sum(-1)))
    assert similarity.spearman < 0.9 and (similarity.spearman_abs, similarity.ssim) == (1.0, 1.0)


def test_ssim_of_tiny_and_zero_maps_needs_no_window_and_divides_by_nothing():
    assert np.isfinite(structural_similarity(np.array([[1.0, 0.0], [0.0, 0.5]]), np.eye(2)))
    assert structural_similarity(np.zeros((4, 4)), np.eye(4)) < 1.0


def test_the_score_is_one_minus_the_mean_rank_correlation_of_the_randomised_depths_clipped():
    method = MethodSanity("conv", spearman_abs=[1.0, -0.5, -0.7])
    assert method.score == 1.0  # 1 - (-0.6), clipped
    method.spearman_abs[1:] = [0.9, 0.5]
    assert method.score == pytest.approx(0.3)  # depth 0 (the trained model against itself) does not count
    assert method.record(DEFAULT_THRESHOLD)["passed"] is False
    method.spearman_abs[1:] = [0.4, 0.2]
    assert method.score == pytest.approx(0.7)
    assert method.record(DEFAULT_THRESHOLD)["passed"] is True


def test_sanity_gates_are_split_from_the_other_gates():
    gates, others = split_sanity_gates(["pointing=0.8", "Sanity = 0.4"], ["loc_error=0.5"])
    assert [(g.metric, g.bound, g.text) for g in gates] == [("sanity", 0.4, "sanity=0.4")]
    assert others == ["pointing=0.8"]
    with pytest.raises(UsageError, match="higher is better for sanity, so bound it with --fail-under sanity=VALUE"):
        split_sanity_gates([], ["sanity=0.5"])


# --- the demo model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_report():
    return camcli.sanity_paths([SCENES], model="demo", out=None, methods=["gradcam", "guidedbackprop"], images=6)


@pytest.mark.slow
def test_on_the_demo_gradcam_depends_on_the_weights_far_more_than_guided_backprop(demo_report):
    """The paper's ordering. Here (seed 0, the 6 scenes) gradcam scores 1.0 and guidedbackprop 0.67; over
    seeds 0 to 2 and 3 to 12 scenes, gradcam 0.81-1.0 and guidedbackprop 0.62-0.70."""
    scores = {name: method.score for name, method in demo_report.methods.items()}
    assert scores["gradcam"] > 0.9
    assert scores["gradcam"] - scores["guidedbackprop"] > 0.2, scores


@pytest.mark.slow
def test_the_demo_report_lists_every_depth(demo_report):
    record = demo_report.record()
    assert record["depths"] == ["none", "predictions", "conv6", "bn5", "conv5", "bn3", "conv1"]
    assert record["randomised"] == [0, 1, 2, 3, 4, 7, 12] and record["weighted_layers"] == 12
    assert (record["kind"], record["model"], record["layer"], record["class"]) == ("sanity", "demo", "conv6", "top1")
    assert len(record["images"]) == 6 and record["threshold"] == DEFAULT_THRESHOLD
    for name, method in record["methods"].items():
        assert METHOD_SCHEMA <= set(method)
        for metric in ("spearman", "spearman_abs", "ssim"):
            assert len(method[metric]) == 7 and method[metric][0] == 1.0, (name, metric)
    gradcam, guided = record["methods"]["gradcam"], record["methods"]["guidedbackprop"]
    assert gradcam["spearman"] == gradcam["spearman_abs"]  # camcli's heatmap has no sign
    assert guided["spearman"] != guided["spearman_abs"]  # the guided gradient has one


@pytest.mark.slow
def test_the_table_has_a_row_per_depth_and_the_verdicts(demo_report):
    table = format_sanity_table(demo_report)
    lines = table.splitlines()
    assert lines[0].startswith("sanity check (Adebayo et al. 2018): demo at conv6, 6 images")
    assert sum(line.startswith("conv1 ") for line in lines) == 3  # spearman_abs, spearman, ssim
    scores = [demo_report.methods[name].score for name in ("gradcam", "guidedbackprop")]
    verdicts = ["yes" if score >= 0.5 else "NO" for score in scores]
    heading = "score = 1 - the mean spearman_abs over the randomised depths (12 weighted"
    at = lines.index(next(line for line in lines if line.startswith(heading)))
    assert lines[at + 1].split() == ["score", *(f"{score:.3f}" for score in scores)]
    assert lines[at + 2].split() == ["passed", *verdicts]


@pytest.mark.slow
def test_a_run_is_reproducible(tmp_path):
    model = batch_norm_model()
    for index, seed in enumerate((1, 2)):
        rgb = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"{index}.png")
    runs = [camcli.sanity_paths([tmp_path], model=model, out=None, methods=["gradcam", "guidedgradcam", "scorecam"])
            .record() for _ in range(2)]
    for record in runs:
        record.pop("seconds")
        save_json(tmp_path / "check.json", record)  # no NaN anywhere (save_json refuses it)
    assert runs[0] == runs[1]


# --- the command ---------------------------------------------------------------------------------------


def evaluate(out, *args):
    return invoke("evaluate", SCENES, "--truth", SCENES / "truth.csv", "--model", "demo", "--steps", 0,
                  "--out", out, *args)


@pytest.mark.slow
def test_evaluate_sanity_passes_a_low_gate_and_writes_sanity_json(tmp_path):
    result = evaluate(tmp_path, "--method", "gradcam", "--method", "guidedbackprop", "--sanity", "--sanity-images", 2,
                      "--fail-under", "sanity=0.1", "--fail-under", "pointing=0.1")
    assert result.exit_code == 0, result.stderr
    assert "spearman_abs: rank correlation" in result.stdout and "pointing" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("camcli: sanity check: 2 images, 6 randomised depths of 12 "
                                                     "weighted layers in ")
    record = json.loads((tmp_path / "sanity.json").read_text("utf-8"))
    assert SCHEMA <= set(record) and set(record["methods"]) == {"gradcam", "guidedbackprop"}
    assert record["images"] == [str(SCENES / "circle_1.png"), str(SCENES / "cross_1.png")]
    assert [gate["passed"] for gate in record["gates"]] == [True, True]
    assert json.loads((tmp_path / "evaluation.json").read_text("utf-8"))["passed"] is True


@pytest.mark.slow
def test_evaluate_sanity_fails_a_gate_above_the_score(tmp_path):
    result = evaluate(tmp_path, "--method", "guidedbackprop", "--sanity", "--sanity-images", 2,
                      "--fail-under", "sanity=0.95")
    assert result.exit_code == 1, result.stderr
    score = json.loads((tmp_path / "sanity.json").read_text("utf-8"))["methods"]["guidedbackprop"]["score"]
    assert score < 0.95
    assert f"camcli: guidedbackprop sanity {score:.4g} is below --fail-under sanity=0.95" in result.stderr.splitlines()


@pytest.mark.slow
def test_audit_sanity_report_shows_this_runs_check_first(tmp_path):
    """Issue 30, the run the user made: `camcli audit --sanity --report` wrote its page before the sanity
    check ran, so the page had no sanity section (or an earlier run's), below six one-image audit cards.
    Now the page has this run's check first, the six classes in one line, and no box on the gradient
    pictures."""
    stale = {"camcli_version": camcli.__version__, "kind": "sanity", "depths": ["none"],
             "methods": {"an earlier run": {"score": 0.5}}}
    save_json(tmp_path / "sanity.json", stale)
    result = invoke("audit", SCENES, "--model", "demo", "--method", "gradcam", "--method", "guidedbackprop",
                    "--sanity", "--sanity-images", 2, "--report", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "index.html").read_text("utf-8")
    assert "an earlier run" not in page
    assert page.index('<section id="sanity">') < page.index('<svg class="sanity"') < page.index('<section id="audit">')
    assert 'data-method="guidedbackprop"' in page[page.index('<svg class="sanity"'):page.index("</svg>")]
    assert "<b>6</b> classes have too few maps to look for strategies in" in page
    assert '<article class="cluster' not in page and '<div class="audit-class"' not in page
    assert page.count('class="box"') == 6  # gradcam's, one per image; none on guidedbackprop's pictures


@pytest.mark.parametrize(("args", "message"), [
    (["--fail-under", "sanity=0.5"], "--fail-under sanity=0.5 needs --sanity"),
    (["--sanity", "--fail-over", "sanity=0.5"],
     "--fail-over sanity=0.5: higher is better for sanity, so bound it with --fail-under sanity=VALUE"),
    (["--sanity", "--fail-under", "sanity=50"],
     "--fail-under sanity=50: metrics are fractions in [0, 1]; for 80% write sanity=0.8"),
])
def test_sanity_usage_errors_exit_2_before_any_work(tmp_path, args, message):
    result = evaluate(tmp_path / "out", *args)
    assert result.exit_code == 2
    assert only_line(result) == f"camcli: error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_sanity_json_camcli_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "sanity.json").write_text('{"mine": true}', "utf-8")
    result = evaluate(tmp_path, "--sanity")
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: {tmp_path / 'sanity.json'} exists and was not written by camcli; "
                                 "write to another output folder (--out) (camcli never replaces files it did not "
                                 "write)")
    assert not (tmp_path / "evaluation.json").exists()


def test_without_scikit_image_the_check_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    result = evaluate(tmp_path, "--sanity")
    assert result.exit_code == 2
    assert only_line(result) == ("camcli: error: the sanity check needs scipy and scikit-image: "
                                 "pip install 'keras-camcli[audit]'")


@pytest.mark.slow
def test_help_shows_the_options_and_the_cli_imports_no_scipy_skimage_or_tensorflow():
    result = invoke("evaluate", "--help")
    assert result.exit_code == 0 and "--sanity-images" in result.stdout and "--fail-under sanity=0.5" in result.stdout
    code = ("import sys, camcli.cli; from click.testing import CliRunner; "
            "assert CliRunner().invoke(camcli.cli.cli, ['evaluate', '--help']).exit_code == 0; "
            "print(*(name in sys.modules for name in ('tensorflow', 'skimage', 'scipy.stats', 'camcli.audit.sanity')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.split() == ["False"] * 4
