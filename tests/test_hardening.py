"""Issue 28, "every surface as hard to break as explain": inputs that once crashed, scored nothing or
were explained on an invented grid now give a result or one line. Truth masks that cannot be scored,
degenerate maps in the audit, non-finite or malformed extra inputs, a Conv1D model's sequence, an
unreadable symlink in a folder walk, and Ray actors that leave the read task no whole CPU."""

import json
import os
import warnings
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tiny_models
from cli_helpers import invoke, only_line
from PIL import Image

from camcli.errors import UsageError
from camcli.runs.label_files import read_palette_mask

# --- 1. truth masks that cannot be scored ---------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Six demo scenes (one per class) in images/, their VOC masks in masks/, and the same masks as
    binary 0/255 masks, all-0 masks and all-255 masks."""
    from camcli.models.demo.samples import write_segmentation_samples

    root = tmp_path_factory.mktemp("masks")
    write_segmentation_samples(root, count=6, seed=5)
    remade = {"binary": lambda m: np.where(m > 0, 255, 0), "zero": np.zeros_like,
              "ignored": lambda m: np.full_like(m, 255)}
    for kind, remake in remade.items():
        (root / kind).mkdir()
        for mask in sorted((root / "masks").glob("*.png")):
            Image.fromarray(remake(read_palette_mask(mask)).astype(np.uint8), "L").save(root / kind / mask.name)
    return root


ONLY_0_AND_255 = ("the masks in {masks} hold only 0 and 255 (e.g. {masks}/circle_1.png): 255 is VOC's \"ignore\", "
                  "so no class would be scored; for binary masks give --mask-labels FILE with the line 255,CLASS")
NO_CLASS_PIXELS = ("the masks in {masks} hold no class pixels, only the background 0 (e.g. {masks}/circle_1.png): "
                   "there is nothing to score; give masks whose values name classes (k for class k - 1, as in VOC, "
                   "or --mask-labels FILE)")


@pytest.mark.parametrize("kind, message", [
    ("binary", ONLY_0_AND_255),  # the commonest format: 255 would be ignored, and mIoU was 1.000
    ("ignored", ONLY_0_AND_255),
    ("zero", NO_CLASS_PIXELS),  # background alone scores an IoU of 1
])
def test_masks_with_nothing_to_score_are_refused_and_no_gate_passes(scenes, kind, message, tmp_path):
    result = invoke("evaluate", scenes / "images", "--truth-masks", scenes / kind, "--model", "demo",
                    "--fail-under", "miou=0.5", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result) == "camcli: error: " + message.format(masks=scenes / kind)
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_binary_masks_are_scored_when_mask_labels_name_255(scenes, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "star_1.png").write_bytes((scenes / "images" / "star_1.png").read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("value,label\n255,star\n")
    out = tmp_path / "out"
    result = invoke("evaluate", tmp_path / "images", "--truth-masks", scenes / "binary", "--mask-labels", labels,
                    "--model", "demo", "--method", "gradcam", "--out", out)
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "evaluation.json").read_text())["methods"]["gradcam"]
    assert {entry["label"] for entry in summary["iou_per_class"]} == {"background", "star"}
    assert 0 < summary["metrics"]["miou"] < 1


def test_mask_labels_may_name_255_but_not_0(tmp_path):
    from camcli.evaluate.masks import read_mask_labels

    table = tmp_path / "labels.csv"
    table.write_text("255,cat\n")
    assert read_mask_labels(table) == {255: "cat"}
    table.write_text("0,cat\n")
    with pytest.raises(UsageError, match=r"line 1: value 0: 0 is the background; name values 1\.\.254, or 255"):
        read_mask_labels(table)


def test_boxes_for_none_of_the_images_is_a_usage_error(scenes, tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"circle_1.png": [], "elsewhere.png": [{"box": [0, 0, 4, 4], "label": "circle"}]}))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "circle_1.png").write_bytes((scenes / "images" / "circle_1.png").read_bytes())
    result = invoke("evaluate", tmp_path / "images", "--truth", truth, "--model", "demo", "--fail-under",
                    "pointing=0.5", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result).startswith(f"camcli: error: none of the 1 images has boxes in {truth}")


# --- 2. the audit on degenerate maps -------------------------------------------------------------------


def _maps(kind, count=20):
    from camcli.audit.spray import GRID

    one = np.random.default_rng(0).uniform(0, 1, (GRID, GRID))
    return {"identical": np.stack([one] * max(count, 1))[:count], "zero": np.zeros((count, GRID, GRID)),
            "nan": np.full((count, GRID, GRID), np.nan), "inf": np.full((count, GRID, GRID), np.inf),
            "one": one[None], "none": np.zeros((0, GRID, GRID))}[kind]


@pytest.mark.parametrize("kind, count, clusters, note", [
    ("identical", 5, [5], "5 maps, 1 distinct: too few to find strategies (at least 12); one cluster"),
    ("identical", 20, [20], "20 maps, 1 distinct: too few to find strategies (at least 12); one cluster"),
    ("zero", 5, [5], "5 all-zero maps form a cluster of their own"),
    ("zero", 20, [20], "20 all-zero maps form a cluster of their own"),
    ("nan", 20, [20], "20 all-zero maps form a cluster of their own"),
    ("inf", 20, [20], "20 all-zero maps form a cluster of their own"),
    ("one", 1, [1], "1 maps: too few to find strategies (at least 12); one cluster"),
    ("none", 0, [], ""),
])
def test_degenerate_maps_give_one_unflagged_cluster_not_a_crash(kind, count, clusters, note):
    """Identical or all-zero maps crashed the process (exit 139) in t-SNE's start; in a subprocess that
    is a failure of this test, in pytest's own process a crash of the run."""
    from camcli.audit.spray import cluster_class

    result = cluster_class(_maps(kind, count))
    assert [len(cluster.members) for cluster in result.clusters] == clusters
    assert result.note == note and not any(cluster.flagged for cluster in result.clusters)
    assert result.embedding is None  # one distinct map has no picture


def test_copies_of_a_few_maps_share_their_points_and_clusters():
    from camcli.audit.spray import GRID, cluster_class, embed_2d, unit_rows

    rng = np.random.default_rng(1)
    distinct = rng.uniform(0, 1, (6, GRID * GRID))
    maps = np.concatenate([distinct, distinct, distinct[:2]])  # 14 maps, 6 distinct
    points = embed_2d(unit_rows(maps))
    assert points.shape == (14, 2) and np.isfinite(points).all()
    np.testing.assert_array_equal(points[:6], points[6:12])
    result = cluster_class(maps)
    assert [len(c.members) for c in result.clusters] == [14] and "6 distinct" in result.note


def test_the_audit_of_copies_of_one_image_exits_0(tmp_path):
    from camcli.models.demo.samples import write_generated

    scene = sorted(p for p in write_generated(tmp_path / "scene") if p.suffix == ".png")[0]
    folder = tmp_path / "copies"
    folder.mkdir()
    for i in range(6):
        (folder / f"copy_{i}.png").write_bytes(scene.read_bytes())
    result = invoke("audit", folder, "--model", "demo", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert [len(c["members"]) for cls in audit["classes"] for c in cls["clusters"]] == [6]


# --- 7 and 9. the extra-inputs table ----------------------------------------------------------------------


@pytest.mark.parametrize("name, content, message", [
    ("t.csv", "image,meta\na.png,1 2\nb.png,nan 1\n",
     "{path}, line 3, column meta: 'nan 1' is not finite (NaN or infinity); give finite numbers"),
    ("t.csv", "image,meta\na.png,inf;1\n",
     "{path}, line 2, column meta: 'inf;1' is not finite (NaN or infinity); give finite numbers"),
    ("t.csv", "image,meta\na.png,\"[1, NaN]\"\n",
     "{path}, line 2, column meta: '[1, NaN]' is not finite (NaN or infinity); give finite numbers"),
    ("t.json", '{"a.png": {"meta": [1, NaN]}}',
     "{path}, image 'a.png', input 'meta': [1, NaN] is not finite (NaN or infinity); give finite numbers"),
    ("t.json", '[{"image": "a.png", "meta": Infinity}]',
     "{path}, image 'a.png', input 'meta': Infinity is not finite (NaN or infinity); give finite numbers"),
    ("t.json", '{"a.png": {"meta": "1 2"}}',
     "{path}, image 'a.png', input 'meta': \"1 2\" is not a number or a list of numbers"),
    ("t.json", '{"a.png": {"meta": [1, [2, 3]]}}',
     "{path}, image 'a.png', input 'meta': [1, [2, 3]] is ragged (lists of different lengths); give one number or "
     "a list of numbers"),
    ("t.json", '{"a.png": {"meta": [[1, 2], [3]]}}',
     "{path}, image 'a.png', input 'meta': [[1, 2], [3]] is ragged (lists of different lengths); give one "
     "number or a list of numbers"),
    ("t.json", '{"a.png": {"meta": [1, null]}}',
     "{path}, image 'a.png', input 'meta': [1, null] is not a number or a list of numbers"),
    ("t.json", '{"a.png": {"meta": {"x": 1}}}',
     "{path}, image 'a.png', input 'meta': {{\"x\": 1}} is not a number or a list of numbers"),
    ("t.json", '{"a.png": {"meta": true}}',
     "{path}, image 'a.png', input 'meta': true is not a number or a list of numbers"),
], ids=["csv-nan", "csv-inf", "csv-list-nan", "json-nan", "json-inf", "json-string", "json-mixed", "json-ragged",
        "json-null", "json-object", "json-bool"])
def test_a_bad_extra_inputs_cell_is_refused_when_the_table_is_read(name, content, message, tmp_path):
    from camcli.models.extra_inputs import read_table

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        read_table(path)
    assert str(caught.value) == message.format(path=path)


def test_good_json_cells_are_read():
    from camcli.models.extra_inputs import _json_rows

    rows = _json_rows("t.json", '{"a.png": {"meta": [1, 2.5], "scale": 3, "grid": [[1, 2], [3, 4]]}}')["a.png"]
    assert rows["meta"].tolist() == [1.0, 2.5] and rows["scale"].tolist() == 3.0 and rows["grid"].shape == (2, 2)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_inputs")
    tiny_models.two_inputs().save(folder / "two_inputs.keras")
    (folder / "images").mkdir()
    for i, image in enumerate(tiny_models.images(2, seed=31)):
        Image.fromarray((image * 255).astype("uint8")).save(folder / "images" / f"img{i}.png")
    return folder


@pytest.mark.parametrize("name, content, where", [
    ("meta.csv", "image,meta\nimg0.png,1 nan\nimg1.png,1 2\n", "line 2, column meta: '1 nan'"),
    ("meta.json", '{"img0.png": {"meta": [1, 2]}, "img1.png": {"meta": "oops"}}', "image 'img1.png', input 'meta'"),
], ids=["csv-nan", "json-string"])
def test_a_bad_extra_inputs_table_is_one_line_before_anything_is_written(two_inputs, name, content, where,
                                                                         tmp_path):
    table = tmp_path / name
    table.write_text(content)
    out = tmp_path / "out"
    result = invoke("explain", two_inputs / "images", "--model", two_inputs / "two_inputs.keras", "--input", "image",
                    "--extra-inputs", table, "--out", out)
    assert result.exit_code == 2
    assert only_line(result).startswith(f"camcli: error: {table}, {where}")
    assert not out.exists() or not list(out.glob("*.png"))  # no overlay without its record


# --- 11. a Conv1D model's sequence is no transformer's tokens -------------------------------------------


def _conv1d():
    """8x8x3 image -> its 64 pixels as a sequence -> Conv1D (stride 4): 16 steps, which once passed for a
    4x4 patch grid."""
    x = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3), name="image")
    y = keras.layers.Reshape((tiny_models.SIZE ** 2, 3), name="pixels")(x)
    y = keras.layers.Conv1D(4, 4, strides=4, name="conv")(y)
    y = keras.layers.GlobalAveragePooling1D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(y), name="conv1d")


def _lstm():
    """8x8x3 image -> its 8 rows as a sequence -> LSTM -> a Dense per step: no layer is image patches."""
    x = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3), name="image")
    y = keras.layers.Reshape((tiny_models.SIZE, tiny_models.SIZE * 3), name="rows")(x)
    y = keras.layers.LSTM(9, return_sequences=True, name="lstm")(y)
    y = keras.layers.Dense(4, name="per_step")(keras.layers.ZeroPadding1D((1, 0), name="pad")(y))
    y = keras.layers.GlobalAveragePooling1D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(y), name="lstm")


def _refusal(layer, kind, model, shape):
    return (f"layer {layer!r} ({kind}) of model {model!r} outputs a 1-D sequence ({shape}), not image patches: "
            "camcli explains layers with a (batch, height, width, channels) output or a vision transformer's "
            "patch tokens")


@pytest.fixture(scope="module")
def sequence_models():
    return {"conv1d": _conv1d(), "lstm": _lstm()}


@pytest.mark.parametrize("model, layer, message", [
    ("conv1d", None, _refusal("conv", "Conv1D", "conv1d", "16x4")),
    ("conv1d", "conv", _refusal("conv", "Conv1D", "conv1d", "16x4")),
    ("lstm", None, _refusal("per_step", "Dense", "lstm", "9x4")),
    ("lstm", "lstm", _refusal("lstm", "LSTM", "lstm", "8x9")),
    ("lstm", "pad", _refusal("pad", "ZeroPadding1D", "lstm", "9x9")),
])
def test_a_1d_sequence_is_refused_naming_the_layer(sequence_models, model, layer, message):
    from camcli.models.layers import explainable_layers, resolve_layer

    built = sequence_models[model]
    with pytest.raises(UsageError) as caught:
        resolve_layer(built, layer, (tiny_models.SIZE, tiny_models.SIZE))
    assert str(caught.value) == message
    listed = [info.path for info, _ in explainable_layers(built, (tiny_models.SIZE, tiny_models.SIZE))]
    assert not {"conv", "lstm", "pad", "per_step"} & set(listed)


def test_a_vit_is_still_explained_at_its_tokens():
    from camcli.models.layers import default_layer, layer_grid

    vit = tiny_models.vit()
    assert default_layer(vit, (tiny_models.SIZE, tiny_models.SIZE)) == "norm1"
    assert layer_grid(vit, "norm1", (tiny_models.SIZE, tiny_models.SIZE)).describe(17, 6) == \
        "17 tokens -> 4x4x6 grid, 1 leading token dropped"


def test_the_cli_refuses_a_conv1d_model_in_one_line(sequence_models, two_inputs, tmp_path):
    path = tmp_path / "conv1d.keras"
    sequence_models["conv1d"].save(path)
    out = tmp_path / "out"
    result = invoke("explain", two_inputs / "images", "--model", path, "--out", out)
    assert result.exit_code == 2
    assert only_line(result) == "camcli: error: " + _refusal("conv", "Conv1D", "conv1d", "16x4")
    assert not out.exists()


# --- 12. an unreadable symlink in a folder walk ------------------------------------------------------------


@pytest.fixture
def denied_link(tmp_path, monkeypatch):
    """A folder with an image and a symlink whose target cannot be read (as /proc/1/cwd for another
    user's process): os.path.realpath raises PermissionError for it."""
    from camcli.models.demo.samples import write_generated

    folder = tmp_path / "walk"
    scene = sorted(p for p in write_generated(tmp_path / "scene") if p.suffix == ".png")[0]
    folder.mkdir()
    (folder / "good.png").write_bytes(scene.read_bytes())
    link = folder / "cwd"
    link.symlink_to(tmp_path / "scene")
    real = os.path.realpath

    def realpath(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(link):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", realpath)
    return folder, link


def test_an_unreadable_symlink_is_skipped_with_its_reason(denied_link, tmp_path):
    from camcli.runs.discovery import SkippedInput, discover

    folder, link = denied_link
    tasks, skipped = discover([folder], tmp_path / "out")
    assert [task.source.name for task in tasks] == ["good.png"]
    assert skipped == [SkippedInput(str(link), "permission denied")]


def test_the_walk_explains_the_good_images_and_reports_the_unreadable_link(denied_link, tmp_path):
    folder, link = denied_link
    out = tmp_path / "out"
    result = invoke("explain", folder, "--model", "demo", "--out", out)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert f"{link}: permission denied" in result.stderr
    assert result.exit_code == 1  # a failed input, as for any bad file
    assert (out / "good.json").is_file()


# --- 6. Ray actors that leave the read task no whole CPU ----------------------------------------------------


def _fake_ray(cpus):
    return SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: {"CPU": cpus},
                           data=SimpleNamespace(ActorPoolStrategy=lambda min_size, max_size: (min_size, max_size)))


@pytest.mark.parametrize("cpus, concurrency, num_cpus, warning", [
    (1, 1, 0.5, "1 actor of 0.5 CPU leaves 0.5 of the 1 CPU of the Ray cluster, and the dataset's read tasks need "
                "a whole CPU: give num_cpus (say 0) or fewer actors, unless the cluster adds nodes"),
    (1, 2, 0.5, "2 actors of 0.5 CPU take all 1 CPU of the Ray cluster, and the dataset's read tasks need a whole "
                "CPU: give num_cpus (say 0) or fewer actors, unless the cluster adds nodes"),
    (2, 2, None, "2 actors of 1 CPU take all 2 CPUs of the Ray cluster, and the dataset's read tasks need a whole "
                 "CPU: give num_cpus (say 0.5) or fewer actors, unless the cluster adds nodes"),
    (3.5, (1, 3), 1.0, "3 actors of 1 CPU leave 0.5 of the 3.5 CPUs of the Ray cluster, and the dataset's read "
                       "tasks need a whole CPU: give num_cpus (say 0.833333) or fewer actors, unless the cluster "
                       "adds nodes"),
    (2, 2, 0.5, None),  # the README's setting on two CPUs: one CPU is left whole
    (4, 3, 1.0, None),
])
def test_actors_that_leave_no_whole_cpu_for_the_read_task_are_warned_about(cpus, concurrency, num_cpus, warning):
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    import camcli.ray

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = camcli.ray._actor_pool(_fake_ray(cpus), concurrency, num_cpus)
    assert pool == ((concurrency, concurrency) if isinstance(concurrency, int) else concurrency)
    assert [str(w.message) for w in caught] == ([warning] if warning else [])
