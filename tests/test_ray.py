"""camcli.ray on a local Ray (2 CPUs): 50 generated images explained by actors write exactly the records and
files that `camcli explain` writes for the same folder; each image once; bad files fail alone; reruns resume."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from json_compare import json_differences
from PIL import Image

from camcli.cli import cli
from camcli.errors import CamcliError, UsageError

pytestmark = pytest.mark.slow  # a local Ray cluster and its actors

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'keras-camcli[ray]'); `make test` "
                                       "installs it")
import ray  # noqa: E402

import camcli.ray  # noqa: E402

# Two actors of half a CPU each leave a CPU for Ray Data's read tasks on a 2-CPU cluster.
ACTORS = {"concurrency": 2, "num_cpus": 0.5}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """50 demo scenes of several sizes, some in subfolders, two of them names that differ in case only."""
    from camcli.models.demo.scenes import make_dataset

    root = tmp_path_factory.mktemp("scenes") / "scenes"
    images, _, _ = make_dataset(50, seed=19)
    for i, image in enumerate(images):
        folder = root / ("night" if i % 4 == 0 else "day" if i % 4 == 1 else "")
        folder.mkdir(parents=True, exist_ok=True)
        name = "Scene.png" if i == 2 else "scene.png" if i == 6 else f"scene{i:02d}.png"
        Image.fromarray(image).save(folder / name)
    return root


def _files(out):
    return sorted(os.path.relpath(os.path.join(d, name), out) for d, _, names in os.walk(out) for name in names)


@pytest.fixture(scope="module")
def both_runs(local_ray, folder, tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    by_cli = base / "cli"
    result = CliRunner().invoke(cli, ["explain", str(folder), "--model", "demo", "--class", "top1", "--class", "top2",
                                      "--save-heatmap", "--out", str(by_cli)])
    assert result.exit_code == 0, result.output
    by_ray = base / "ray"
    summary = camcli.ray.explain_dataset(ray.data.read_images(str(folder), include_paths=True), by_ray,
                                         model="demo", root=str(folder), classes=["top1", "top2"], save_heatmap=True,
                                         **ACTORS)
    return by_cli, by_ray, summary


def test_the_records_equal_camcli_explains(both_runs):
    by_cli, by_ray, summary = both_runs
    assert (summary.images, summary.ok, summary.failed) == (50, 50, 0)
    files = _files(by_cli)
    assert files == _files(by_ray) and len([f for f in files if f.endswith(".json")]) == 51
    # Names equal but for case go through every collision round of the folder walk, on both engines.
    assert "1-scenes/Scene.png.json" in files and "1-scenes/scene.png~2.json" in files
    differences = []
    for name in files:
        if name.endswith(".json") and name != "summary.json":
            cli_record = json.loads((by_cli / name).read_text())
            differences += json_differences(cli_record, json.loads((by_ray / name).read_text()), name)
    assert differences == []
    cli_summary = json.loads((by_cli / "summary.json").read_text())
    ray_summary = json.loads((by_ray / "summary.json").read_text())
    for key in ("images", "ok", "failed", "fingerprint", "model", "layer", "methods", "classes"):
        assert ray_summary[key] == cli_summary[key], key


def test_the_overlays_and_heatmaps_are_the_same_files(both_runs):
    by_cli, by_ray, _ = both_runs
    for name in _files(by_cli):
        if name.endswith(".png"):
            assert (by_cli / name).read_bytes() == (by_ray / name).read_bytes(), name
        elif name.endswith(".npy"):
            np.testing.assert_allclose(np.load(by_cli / name), np.load(by_ray / name), atol=1e-5, err_msg=name)


def test_every_image_is_explained_exactly_once(local_ray, folder, tmp_path):
    """The callable class in a pipeline of one's own: one row per image, none twice, none left out."""
    ds = ray.data.read_binary_files(str(folder), include_paths=True)
    settings = camcli.ray.ExplainSettings.of("demo")
    tasks, root, ignored = camcli.ray._listed_tasks(ds, str(folder), tmp_path)
    assert ignored == frozenset()
    rows = ds.map_batches(camcli.ray.ExplainBatches, batch_size=8, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5,
                          fn_constructor_kwargs={"out": str(tmp_path / "out"), "settings": settings, "tasks": tasks,
                                                 "root": root}).take_all()
    stems = [row["stem"] for row in rows]
    assert len(stems) == 50 and sorted(stems) == sorted(stem for _, stem in tasks.values())
    assert {row["status"] for row in rows} == {"explained"}
    assert len(_files(tmp_path / "out")) == 100  # an overlay and a record each


def test_a_bad_file_fails_alone_and_other_files_are_ignored_as_camcli_explain_does(local_ray, folder, tmp_path):
    images = tmp_path / "mixed"
    shutil.copytree(folder / "day", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (images / "truth.csv").write_text("image,label\n")  # no image: the folder walk skips it, and so does Ray's run
    summary = camcli.ray.explain_dataset(ray.data.read_binary_files(str(images), include_paths=True),
                                         tmp_path / "out", model="demo", **ACTORS)
    good = len(list((folder / "day").glob("*.png")))
    assert (summary.images, summary.ok, summary.failed) == (good + 1, good, 1)
    cli_run = CliRunner().invoke(cli, ["explain", str(images), "--model", "demo", "--out", str(tmp_path / "cli")])
    assert cli_run.exit_code == 1
    [failure] = summary.failures
    assert failure["image"] == str(images / "broken.png")
    assert f"{failure['image']}: {failure['error']}" in cli_run.output
    assert len([f for f in _files(tmp_path / "out") if f.endswith(".png")]) == good


def test_a_rerun_with_resume_skips_the_finished_images(local_ray, folder, tmp_path):
    ds = ray.data.read_binary_files(str(folder / "night"), include_paths=True)
    first = camcli.ray.explain_dataset(ds, tmp_path / "out", model="demo", **ACTORS)
    stamps = {name: os.stat(tmp_path / "out" / name).st_mtime_ns for name in _files(tmp_path / "out")
              if name != "summary.json"}
    again = camcli.ray.explain_dataset(ds, tmp_path / "out", model="demo", resume=True, **ACTORS)
    assert (again.images, again.ok, again.skipped, again.explained) == (first.images, first.images, first.images, 0)
    assert {name: os.stat(tmp_path / "out" / name).st_mtime_ns for name in stamps} == stamps


@pytest.mark.parametrize("options, message", [
    ({"model": object()}, "`model` takes a built-in name, a model file, a LoadedModel or a Keras model"),
    ({"model": SimpleNamespace(layers=[])}, "explain_dataset needs the model as a name or a file path"),
    ({"model": "demo", "colour": "red"}, "explain_dataset takes no option 'colour'"),
    ({"model": "demo", "layers": "nope"}, "nope"),
    ({"model": "demo", "concurrency": 0}, "`concurrency=0` must be a number of actors"),
    ({"model": "demo", "colormap": "rainbowish"}, "rainbowish"),
])
def test_bad_options_fail_before_any_actor_starts(local_ray, folder, tmp_path, options, message):
    ds = ray.data.read_binary_files(str(folder / "day"), include_paths=True)
    with pytest.raises(CamcliError) as error:
        camcli.ray.explain_dataset(ds, tmp_path / "out", **options)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_dataset_is_refused(local_ray, folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(folder / "day", images)
    (images / "out").mkdir()
    Image.new("RGB", (8, 8)).save(images / "out" / "old.png")
    with pytest.raises(UsageError, match="inside the output folder"):
        camcli.ray.explain_dataset(ray.data.read_binary_files(str(images), include_paths=True), images / "out",
                                   model="demo")


def test_actors_that_would_hold_every_cpu_are_warned_about(local_ray):
    with pytest.warns(UserWarning, match="2 actors of 1 CPU take all 2 CPUs of the Ray cluster"):
        camcli.ray._actor_pool(ray, 2, None)


def test_a_dataset_of_paths_alone_is_read_from_the_files_and_named_relative_to_root(local_ray, folder, tmp_path):
    root = tmp_path / "mine"
    shutil.copytree(folder / "night", root / "night")
    (root / "notes.txt").write_text("not an image")
    paths = sorted(str(p) for p in root.rglob("*"))
    ds = ray.data.from_items([{"path": path} for path in paths if os.path.isfile(path)])
    summary = camcli.ray.explain_dataset(ds, tmp_path / "out", model="demo", root=str(root), **ACTORS)
    images = len(list((root / "night").glob("*.png")))
    assert (summary.images, summary.ok) == (images, images)
    cli_run = CliRunner().invoke(cli, ["explain", str(root), "--model", "demo", "--out", str(tmp_path / "cli")])
    assert cli_run.exit_code == 0
    assert _files(tmp_path / "out") == _files(tmp_path / "cli")
    for name in _files(tmp_path / "out"):
        if name.endswith(".json") and name != "summary.json":
            assert json_differences(json.loads((tmp_path / "cli" / name).read_text()),
                                    json.loads((tmp_path / "out" / name).read_text()), name) == []
    with pytest.raises(UsageError, match="lists no files .* give `root`"):
        camcli.ray.explain_dataset(ds, tmp_path / "out2", model="demo", **ACTORS)


def test_a_two_input_model_takes_its_extra_inputs_table_as_camcli_explain_does(local_ray, tmp_path):
    """Every explain_paths option reaches the actors, extra_inputs included (it was refused by name)."""
    import keras
    import tiny_models

    model_path = tmp_path / "two_inputs.keras"
    tiny_models.two_inputs().save(model_path)
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(tiny_models.images(3, seed=31)):
        Image.fromarray((image * 255).astype("uint8")).save(images / f"img{i}.png")
    table = tmp_path / "meta.csv"
    table.write_text("image,meta\nimg0.png,1 -1\nimg1.png,0.5 2\nimg2.png,-3 0\n")
    by_cli = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["explain", str(images), "--model", str(model_path), "--input", "image",
                                      "--extra-inputs", str(table), "--out", str(by_cli), "-q"])
    assert result.exit_code == 0, result.output
    by_ray = tmp_path / "ray"
    summary = camcli.ray.explain_dataset(ray.data.read_binary_files(str(images), include_paths=True), by_ray,
                                         model=str(model_path), image_input="image", extra_inputs=str(table),
                                         root=str(images), **ACTORS)
    assert (summary.images, summary.ok, summary.failed) == (3, 3, 0)
    differences = []
    for i in range(3):
        name = f"img{i}.json"
        differences += json_differences(json.loads((by_cli / name).read_text()),
                                        json.loads((by_ray / name).read_text()), name)
    assert differences == []
    model = keras.models.load_model(model_path)
    for i, meta in enumerate([[1, -1], [0.5, 2], [-3, 0]]):  # each image with its own row of the table
        image = np.asarray(Image.open(images / f"img{i}.png"), dtype="float32")[None]
        expected = model.predict([image, np.array([meta], "float32")], verbose=0)[0]
        predictions = json.loads((by_ray / f"img{i}.json").read_text())["predictions"]
        assert {p["index"]: p["score"] for p in predictions} == pytest.approx(dict(enumerate(expected.tolist())),
                                                                                abs=1e-5)


def test_ray_takes_the_precision(local_ray, folder, tmp_path):
    ds = ray.data.read_binary_files(str(folder / "night"), include_paths=True)
    summary = camcli.ray.explain_dataset(ds, tmp_path / "out", model="demo", precision="bfloat16", **ACTORS)
    assert summary.failed == 0 and summary.ok == summary.images > 0
    written = json.loads((tmp_path / "out" / "summary.json").read_text("utf-8"))
    records = [json.loads((tmp_path / "out" / name).read_text("utf-8")) for name in _files(tmp_path / "out")
               if name.endswith(".json") and name != "summary.json"]
    assert written["precision"] == "bfloat16" and records and {r["precision"] for r in records} == {"bfloat16"}
