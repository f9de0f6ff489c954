"""Issue 28, the rest of "every surface as hard to break as explain": one rule for signals in every
command, one line for a full disk or a read-only folder, one writer per output folder, --debug that
keeps the exit status, and tables of bad inputs for each surface (audit, evaluate with boxes and
masks, extra inputs, library calls, Ray): one line and an exit status on the command line, one
camcli.errors exception from the library, never a traceback."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from cli_helpers import invoke, only_line, read_json

from camcli.errors import CamcliError, UsageError
from camcli.evaluate.evaluation import METRICS


@pytest.fixture()
def six(scenes, tmp_path):
    """The six generated scenes and their truth.csv, copied into a folder of this test's own."""
    folder = tmp_path / "six"
    folder.mkdir()
    for scene in scenes:
        shutil.copy(scene, folder / scene.name)
    shutil.copy(scenes[0].parent / "truth.csv", folder / "truth.csv")
    return folder


def _signal_at_call(monkeypatch, signum, call):
    """The `call`-th explain_batch of the run raises `signum` in this process, as `kill` would."""
    from camcli.explain.explainer import Explainer

    original, calls = Explainer.explain_batch, []

    def explain_then_signal(self, batch, *rest, **options):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signum)
        return original(self, batch, *rest, **options)

    monkeypatch.setattr(Explainer, "explain_batch", explain_then_signal)


# --- 1. one rule for signals: 130/143, the work so far recorded as interrupted, no passing gate -------------


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_evaluate_with_its_json_written_as_interrupted(six, tmp_path, monkeypatch, signum, code):
    _signal_at_call(monkeypatch, signum, 2)
    out = tmp_path / "out"
    result = invoke("evaluate", six, "--truth", six / "truth.csv", "--model", "demo", "--method", "gradcam",
                    "--steps", "0", "--batch-size", "1", "--fail-under", "pointing=0", "--out", out)
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr and "finishing the current batch" in result.stderr
    record = read_json(out / "evaluation.json")
    assert record["interrupted"] is True and record["passed"] is False
    assert record["evaluated"] == 2 and record["images"] == 6
    assert "camcli: interrupted: the metrics cover 2 of 6 images; a partial run passes no gate" in result.stderr
    assert not (out / ".camcli.lock.tmp").exists()


def test_a_signal_stops_a_mask_evaluation_too(tmp_path, monkeypatch):
    from camcli.models.demo.samples import write_segmentation_samples

    write_segmentation_samples(tmp_path / "masked", count=6, seed=5)
    _signal_at_call(monkeypatch, signal.SIGTERM, 1)
    out = tmp_path / "out"
    result = invoke("evaluate", tmp_path / "masked" / "images", "--truth-masks", tmp_path / "masked" / "masks",
                    "--model", "demo", "--method", "gradcam", "--batch-size", "2", "--out", out)
    assert result.exit_code == 143, result.stderr
    record = read_json(out / "evaluation.json")
    assert record["interrupted"] is True and record["passed"] is False and record["evaluated"] == 2


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_audit_and_fail_on_flag_never_passes(six, tmp_path, monkeypatch, signum, code):
    _signal_at_call(monkeypatch, signum, 2)
    out = tmp_path / "out"
    result = invoke("audit", six, "--model", "demo", "--batch-size", "1", "--fail-on-flag", "--out", out)
    assert result.exit_code == code, result.stderr  # it exited 0, having audited a third of the maps
    assert "Traceback" not in result.stderr
    audit = read_json(out / "audit.json")
    assert audit["interrupted"] is True and audit["images"] < 6
    assert read_json(out / "summary.json")["interrupted"] is True
    assert "camcli: interrupted: the audit covers the images explained before the signal" in result.stderr


def test_sigterm_outside_a_runs_batches_exits_143_too(six, tmp_path, monkeypatch):
    """The sanity check after an evaluation has no batches to finish: SIGTERM stops it at once, in one line
    (it killed the process silently, rc -15)."""
    from camcli.audit import sanity

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(sanity, "run_sanity", terminated)
    out = tmp_path / "out"
    result = invoke("evaluate", six, "--truth", six / "truth.csv", "--model", "demo", "--method", "gradcam",
                    "--steps", "0", "--sanity", "--out", out)
    assert result.exit_code == 143
    assert result.stderr.splitlines()[-1] == "camcli: terminated (SIGTERM)"
    assert read_json(out / "evaluation.json")["interrupted"] is False  # the evaluation itself was whole
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back


# --- 2. a read-only folder, a full disk or a quota: one line, and the run stops --------------------------


def _failing_writes(monkeypatch, module, name, code):
    def fail(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EDQUOT], ids=["EROFS", "ENOSPC", "EDQUOT"])
def test_evaluate_cannot_write_its_results_in_one_line(six, tmp_path, monkeypatch, code):
    from camcli.evaluate import evaluation

    _failing_writes(monkeypatch, evaluation, "save_json", code)
    out = tmp_path / "out"
    result = invoke("evaluate", six, "--truth", six / "truth.csv", "--model", "demo", "--method", "gradcam",
                    "--steps", "0", "--out", out)
    assert result.exit_code == 1
    assert only_line(result) == (
        f"camcli: error: cannot write to {out}: {os.strerror(code)} ({errno.errorcode[code]}, at "
        f"{out / 'evaluation.json'}); the run stopped: free space or fix the folder, then rerun")


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC], ids=["EROFS", "ENOSPC"])
def test_the_audit_cannot_write_its_results_in_one_line(six, tmp_path, monkeypatch, code):
    from camcli.audit import folder

    _failing_writes(monkeypatch, folder, "save_png", code)
    out = tmp_path / "out"
    result = invoke("audit", six, "--model", "demo", "--out", out, "-q")
    assert result.exit_code == 1
    line = only_line(result)
    assert line.startswith(f"camcli: error: cannot write to {out}: {os.strerror(code)} ({errno.errorcode[code]}, at ")
    assert "internal error" not in line


def test_the_audit_stops_when_its_explain_run_meets_a_full_disk(six, tmp_path, monkeypatch):
    from camcli.runs import writer

    _failing_writes(monkeypatch, writer, "save_picture", errno.ENOSPC)
    out = tmp_path / "out"
    result = invoke("audit", six, "--model", "demo", "--out", out, "-q")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("camcli: error:")]
    assert len(errors) == 1 and "No space left on device (ENOSPC" in errors[0], result.stderr
    assert "internal error" not in result.stderr and not (out / "audit.json").exists()


# --- 3. one writer per output folder ------------------------------------------------------------------------


@pytest.fixture()
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _lock(folder, name=".camcli.lock.tmp", pid=None, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return folder / name


def _held_by(out, pid, name=".camcli.lock.tmp", host=None):
    return (f"camcli: error: {out} is being written by another camcli run (pid {pid} on "
            f"{host or socket.gethostname()}, lock {name}): wait for it to end, or write to another output folder "
            "(--out); if that run is gone, remove the lock")


@pytest.mark.parametrize("command", ["explain", "evaluate", "audit"])
def test_a_second_writer_of_a_folder_is_refused_in_one_line(six, tmp_path, live_pid, command):
    out = tmp_path / "out"
    _lock(out, pid=live_pid)
    extra = {"explain": [], "evaluate": ["--truth", six / "truth.csv", "--steps", "0"], "audit": []}[command]
    result = invoke(command, six, "--model", "demo", "--out", out, *extra)
    assert result.exit_code == 2
    assert only_line(result) == _held_by(out, live_pid)
    assert sorted(p.name for p in out.iterdir()) == [".camcli.lock.tmp"]  # nothing written, the lock kept


def test_a_lock_from_another_host_is_respected(six, tmp_path):
    out = tmp_path / "out"
    _lock(out, pid=1, host="elsewhere.example")
    result = invoke("explain", six, "--model", "demo", "--out", out)
    assert result.exit_code == 2
    assert only_line(result) == _held_by(out, 1, host="elsewhere.example")


@pytest.mark.parametrize("content", ["dead", "garbage"])
def test_a_killed_runs_lock_is_taken_over(six, tmp_path, content):
    out = tmp_path / "out"
    lock = _lock(out, pid=_dead_pid())
    if content == "garbage":
        lock.write_text("")  # killed while writing it
    result = invoke("explain", six, "--model", "demo", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert read_json(out / "summary.json")["ok"] == 6
    assert not lock.exists()  # taken over, then given back


def test_shards_write_one_folder_side_by_side_but_never_with_a_whole_run(six, tmp_path, live_pid):
    out = tmp_path / "out"
    _lock(out, ".camcli.lock.1-of-2.tmp", pid=live_pid)  # shard 1 of 2 is running
    second = invoke("explain", six, "--model", "demo", "--out", out, "--shard", "2/2", "-q")
    assert second.exit_code == 0, second.stderr
    again = invoke("explain", six, "--model", "demo", "--out", out, "--shard", "1/2", "-q")
    assert again.exit_code == 2 and only_line(again) == _held_by(out, live_pid, ".camcli.lock.1-of-2.tmp")
    whole = invoke("explain", six, "--model", "demo", "--out", out, "-q")
    assert whole.exit_code == 2 and only_line(whole) == _held_by(out, live_pid, ".camcli.lock.1-of-2.tmp")
    (out / ".camcli.lock.1-of-2.tmp").unlink()
    _lock(out, pid=live_pid)  # a whole-folder run holds it: no shard may write
    shard = invoke("explain", six, "--model", "demo", "--out", out, "--shard", "2/2", "-q")
    assert shard.exit_code == 2 and only_line(shard) == _held_by(out, live_pid)


def test_resume_beside_a_running_shard_leaves_its_files_in_flight(six, tmp_path, live_pid):
    out = tmp_path / "out"
    lock = _lock(out, ".camcli.lock.1-of-2.tmp", pid=live_pid)
    in_flight = out / ".camcli.circle_1.json.x1y2z3.tmp"  # shard 1 of 2 is writing it
    in_flight.write_text("{}")
    result = invoke("explain", six, "--model", "demo", "--out", out, "--shard", "2/2", "--resume", "-q")
    assert result.exit_code == 0, result.stderr
    assert in_flight.exists()  # --resume removed every temporary file, a live shard's included
    lock.unlink()
    again = invoke("explain", six, "--model", "demo", "--out", out, "--shard", "2/2", "--resume", "-q")
    assert again.exit_code == 0 and not in_flight.exists()  # nobody else writes: a killed run's leftover


@pytest.fixture()
def ray_data():
    """ray, with ray.data imported; a Ray that a test's dataset started is shut down after it."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = ray.is_initialized()
    yield ray
    if not started and ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_ray_holds_the_folder_lock_too(six, tmp_path, live_pid, ray_data):
    import camcli.ray

    ray = ray_data

    out = tmp_path / "out"
    _lock(out, pid=live_pid)
    with pytest.raises(UsageError) as raised:
        camcli.ray.explain_dataset(ray.data.read_binary_files(str(six), include_paths=True), out, model="demo")
    assert f"camcli: error: {raised.value}" == _held_by(out, live_pid).replace("(--out)", "(`out`)")


def test_the_lock_is_no_temporary_file_and_the_report_ignores_it(tmp_path):
    from camcli.runs.layout import is_lock, is_temporary, lock_name

    assert lock_name() == ".camcli.lock.tmp" and lock_name((2, 4)) == ".camcli.lock.2-of-4.tmp"
    assert is_lock(".camcli.lock.2-of-4.tmp") and not is_temporary(".camcli.lock.tmp")  # --resume keeps it
    assert is_temporary(".camcli.summary.json.abc123.tmp")


# --- 4. --debug keeps the exit status ----------------------------------------------------------------------


def test_debug_shows_the_traceback_and_keeps_a_usage_errors_status_2(tmp_path, monkeypatch, capsys):
    from camcli.cli import main

    monkeypatch.setattr(sys, "argv", ["camcli", "--debug", "summary", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2  # it was 1, as for any uncaught exception
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "MissingSummaryError: no run summary at" in stderr


# --- 5. a stopped run says how many images it never tried ------------------------------------------------


def test_a_full_disk_says_how_many_images_were_not_tried(scenes, tmp_path, monkeypatch):
    from camcli.runs import writer

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        shutil.copy(scenes[i % len(scenes)], photos / f"{i:02d}.png")
    real, calls = writer.save_picture, []

    def save_picture(path, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(writer, "save_picture", save_picture)
    out = tmp_path / "out"
    result = invoke("explain", photos, "--model", "demo", "--out", out, "--batch-size", "2")
    assert result.exit_code == 1
    summary = read_json(out / "summary.json")
    untried = 30 - summary["ok"] - summary["failed"]
    assert untried > 0
    [closing] = [line for line in result.stderr.splitlines() if line.startswith("camcli: explained")]
    assert closing.startswith(f"camcli: explained 1 of 30 images ({summary['failed']} failed, {untried} not tried) ")


# --- 6. a model file's pixels: raw 0..255 said aloud, scaled twice refused ----------------------------------


def _scaling_model(layer):
    import keras

    x = keras.Input((16, 16, 3))
    y = layer(x) if layer is not None else x
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(6, activation="softmax")(y))


@pytest.fixture(scope="module")
def scaling_models(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("scaling")
    layers = {"raw": None, "rescaling": keras.layers.Rescaling(1 / 255, name="rescale"),
              "normalization": keras.layers.Normalization(mean=[120.0] * 3, variance=[3600.0] * 3, name="norm")}
    paths = {}
    for name, layer in layers.items():
        paths[name] = folder / f"{name}.keras"
        _scaling_model(layer).save(paths[name])
    return paths


RAW_PIXELS = ("camcli: warning: model {path} has no Rescaling or Normalization layer at its input, and no --preprocess "
              "was given: its pixels go in as 0..255; if it was trained on scaled pixels, choose --preprocess "
              "(scale01 = x/255, or its keras.applications mode), or --preprocess none to keep them")
TWICE = ("camcli: warning: model {path} scales its own pixels ({layer} at its input), and --preprocess scale01 "
         "scales them first: they are scaled twice; drop --preprocess")


@pytest.mark.filterwarnings("default::camcli.models.loading.PreprocessWarning")
@pytest.mark.parametrize("model, preprocess, expected", [
    ("raw", None, RAW_PIXELS),
    ("raw", "none", None),  # chosen: no warning
    ("raw", "scale01", None),
    ("rescaling", None, None),  # the model scales its own pixels: 0..255 is right
    ("rescaling", "scale01", TWICE.replace("{layer}", "rescale")),
    ("normalization", "caffe", TWICE.replace("{layer}", "norm").replace("scale01", "caffe")),
])
def test_a_model_files_pixel_scaling_is_said_in_one_warning(scaling_models, scenes, tmp_path, model, preprocess,
                                                            expected):
    path = scaling_models[model]
    extra = ["--preprocess", preprocess] if preprocess else []
    result = invoke("explain", scenes[0], "--model", path, *extra, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ([expected.format(path=path)] if expected else [])


@pytest.mark.filterwarnings("default::camcli.models.loading.PreprocessWarning")
def test_the_library_warns_with_one_line(scaling_models):
    import camcli
    from camcli.models.loading import PreprocessWarning

    with pytest.warns(PreprocessWarning) as caught:
        camcli.load_model(str(scaling_models["raw"]))
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert str(caught[0].message).startswith(f"model {scaling_models['raw']} has no Rescaling or Normalization")


# --- 7, 8 and 10. bad inputs, surface by surface: one line and an exit status ------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of everything the tables below need: the six scenes, three masked scenes, model files
    (one input, two inputs, a ViT, a truncated one), label files, tables and an explained folder."""
    import tiny_models

    from camcli.models.demo.samples import write_generated, write_segmentation_samples

    root = tmp_path_factory.mktemp("bad")
    write_generated(root / "scenes")
    write_segmentation_samples(root / "masked", count=3, seed=5)
    tiny_models.two_inputs().save(root / "two.keras")
    tiny_models.gap_dense(classes=6).save(root / "gap.keras")
    tiny_models.vit().save(root / "vit.keras")
    one = tiny_models.vit()  # one input, named "image"
    one.save(root / "one.keras")
    whole = (root / "gap.keras").read_bytes()
    (root / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    (root / "labels_twice.txt").write_text("circle\ncrane\nring\nstar\ncrane\ntriangle\n")
    (root / "labels_numbers.txt").write_text("5\n2\n0\n1\n3\n4\n")
    tables = {"extra_cell.csv": "image,meta\ncircle_1.png,1 2,7\n",
              "extra_twice.csv": "image,meta\ncircle_1.png,1 2\ncircle_1.png,3 4\n",
              "extra_twice.json": '{"circle_1.png": {"meta": [1, 2]}, "circle_1.png": {"meta": [3, 4]}}',
              "extra_ok.csv": "image,meta\ncircle_1.png,1 2\n",
              "box_backwards.csv": "image,x0,y0,x1,y1\ncircle_1.png,10,10,5,5\n",
              "box_nan.csv": "image,x0,y0,x1,y1\ncircle_1.png,nan,10,5,5\n",
              "box_columns.csv": "image,x0,y0\ncircle_1.png,1,2\n",
              "mask_300.csv": "300,circle\n"}
    for name, text in tables.items():
        (root / name).write_text(text)
    assert invoke("explain", root / "scenes", "--model", "demo", "--save-heatmap", "--out", root / "explained",
                  "-q").exit_code == 0
    return root


IMAGE = "{T}/scenes/circle_1.png"
TWO = ["--model", "{T}/two.keras", "--input", "image", "--preprocess", "none"]
GAP = ["--model", "{T}/gap.keras", "--preprocess", "none"]
IN_PLACE = ("{T}/explained is an explain output folder: its maps are audited as they are, and {flag} would choose "
            "the model that explains images; drop it, or give the images instead of the folder")
MAP_OPTIONS = ("{T}/explained is an explain output folder: its maps are audited as they are; method, layer and token "
               "grid options apply when auditing images")
NOT_A_MASK = ("{T}/mask_300.csv, line 1: value 300: masks hold 8-bit values, 0..255; name values 1..254, or 255 "
              "(the object of binary masks)")

CLI_CASES = [
    # explain: the extra-inputs table, the token grid, classes that mean two things, files that are no model
    ("extra-cell", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_cell.csv"], 2,
     "{T}/extra_cell.csv, line 2: 1 cell more than the header's 2 columns (image, meta); quote a cell that holds "
     "a comma"),
    ("extra-row-twice", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_twice.csv"], 2,
     "{T}/extra_twice.csv, line 3: a second row for 'circle_1.png' (the first is line 2); keep one row per image"),
    ("extra-key-twice", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_twice.json"], 2,
     "{T}/extra_twice.json: 'circle_1.png' is given twice; keep one row per image (and one value per input)"),
    ("extra-on-one-input", ["explain", IMAGE, "--model", "{T}/one.keras", "--extra-inputs", "{T}/extra_ok.csv"], 2,
     "model {T}/one.keras has one input (image: (batch, 8, 8, 3)): --extra-inputs gives the other inputs of "
     "a model with several; drop it"),
    ("grid-on-cnn", ["explain", IMAGE, *GAP, "--token-grid", "4x4"], 2,
     "--token-grid reshapes a vision transformer's tokens, and model 'gap_dense' has no token layer: drop "
     "--token-grid"),
    ("grid-on-conv-layer", ["explain", IMAGE, *GAP, "--layer", "target", "--token-grid", "4x4"], 2,
     "--token-grid reshapes a vision transformer's tokens, and layer 'target' (Conv2D) outputs a 8x8 map already: "
     "drop --token-grid"),
    ("grid-drops-patches", ["explain", IMAGE, "--model", "{T}/vit.keras", "--preprocess", "none",
                            "--token-grid", "3x3"], 2,
     "layer 'norm1' outputs 17 tokens, 1 leading token and a 4x4 grid of patches (the 8x8 input in the patch "
     "embedding's patches): 3x3 would drop 7 patch tokens; give --token-grid 4x4, or leave it out"),
    ("grid-too-large", ["explain", IMAGE, "--model", "{T}/vit.keras", "--preprocess", "none",
                        "--token-grid", "100x100"], 2,
     "layer 'norm1' outputs 17 tokens, fewer than the 100x100 grid given; give the patch grid with --token-grid "
     "HxW (its first tokens beyond HxW, e.g. a class token, are dropped)"),
    ("class-two-labels", ["explain", IMAGE, *GAP, "--labels", "{T}/labels_twice.txt", "--class", "crane"], 2,
     "--class crane is ambiguous: classes 1 and 4 are both labelled 'crane'; give the index of the one to explain"),
    ("truncated-model", ["explain", IMAGE, "--model", "{T}/truncated.keras"], 2,
     "cannot load model {T}/truncated.keras: the .keras file is truncated or damaged (not a whole zip archive); "
     "save the model again, or copy the whole file"),
    # audit: an explained folder is audited as it is
    ("audit-model", ["audit", "{T}/explained", "--model", "demo-cheat"], 2, IN_PLACE.replace("{flag}", "--model")),
    ("audit-preprocess", ["audit", "{T}/explained", "--preprocess", "scale01"], 2,
     IN_PLACE.replace("{flag}", "--preprocess")),
    ("audit-weights", ["audit", "{T}/explained", "--weights", "none"], 2, IN_PLACE.replace("{flag}", "--weights")),
    ("audit-token-grid", ["audit", "{T}/explained", "--token-grid", "4x4"], 2, MAP_OPTIONS),
    ("audit-method", ["audit", "{T}/explained", "--method", "cam"], 2, MAP_OPTIONS),
    ("audit-out", ["audit", "{T}/explained", "--out", "{T}/elsewhere"], 2,
     "{T}/explained is an explain output folder, audited in place: --out does not apply"),
    ("audit-by-truth", ["audit", "{T}/scenes", "--model", "demo", "--by", "truth", "--out", "{T}/a"], 2,
     "--by truth needs the images' labels: give --truth-labels, a CSV with image,label columns"),
    ("audit-gate", ["audit", "{T}/scenes", "--model", "demo", "--fail-under", "pointing=0.5", "--out", "{T}/a"], 2,
     "--fail-under pointing=0.5: audit gates only the sanity score (sanity=VALUE); gate localization metrics with "
     "`camcli evaluate`"),
    # evaluate with boxes
    ("boxes-no-truth", ["evaluate", "{T}/scenes", "--model", "demo", "--out", "{T}/e"], 2,
     "evaluate needs the truth: boxes (--truth) or pixel masks (--truth-masks), one of them"),
    ("boxes-and-masks", ["evaluate", "{T}/scenes", "--truth", "{T}/scenes/truth.csv", "--truth-masks",
                         "{T}/masked/masks", "--model", "demo", "--out", "{T}/e"], 2,
     "evaluate needs the truth: boxes (--truth) or pixel masks (--truth-masks), one of them"),
    ("boxes-missing", ["evaluate", "{T}/scenes", "--truth", "{T}/nope.csv", "--model", "demo", "--out", "{T}/e"], 2,
     "truth file {T}/nope.csv does not exist; give a .csv, a .json or a folder of VOC .xml files"),
    ("boxes-backwards", ["evaluate", "{T}/scenes", "--truth", "{T}/box_backwards.csv", "--model", "demo"], 2,
     "{T}/box_backwards.csv: line 2: x1 (5) must be greater than x0 (10); write image,x0,y0,x1,y1[,label] with "
     "x1 > x0 and y1 > y0 in pixels"),
    ("boxes-nan", ["evaluate", "{T}/scenes", "--truth", "{T}/box_nan.csv", "--model", "demo"], 2,
     "{T}/box_nan.csv: line 2: x0 nan is not a finite number; write image,x0,y0,x1,y1[,label] with x1 > x0 and "
     "y1 > y0 in pixels"),
    ("boxes-columns", ["evaluate", "{T}/scenes", "--truth", "{T}/box_columns.csv", "--model", "demo"], 2,
     "{T}/box_columns.csv: line 1: 3 columns, expected 5 or 6; write image,x0,y0,x1,y1[,label] with x1 > x0 and "
     "y1 > y0 in pixels"),
    ("boxes-gate-value", ["evaluate", "{T}/scenes", "--truth", "{T}/scenes/truth.csv", "--model", "demo",
                          "--fail-under", "pointing=x"], 2,
     "--fail-under pointing=x: 'x' is not a number; write e.g. pointing=0.8"),
    ("boxes-mask-gate", ["evaluate", "{T}/scenes", "--truth", "{T}/scenes/truth.csv", "--model", "demo",
                         "--fail-under", "miou=0.5"], 2,
     "--fail-under miou=0.5: unknown metric 'miou'; choose one of " + ", ".join(METRICS)),
    ("boxes-two-inputs", ["evaluate", "{T}/scenes", "--truth", "{T}/scenes/truth.csv", *TWO, "--extra-inputs",
                          "{T}/extra_ok.csv"], 2,
     "evaluate scores one-input models, and {T}/two.keras also takes meta; explain it with `camcli explain`"),
    ("boxes-mask-labels", ["evaluate", "{T}/scenes", "--truth", "{T}/scenes/truth.csv", "--mask-labels",
                           "{T}/mask_300.csv", "--model", "demo"], 2,
     "--mask-labels applies to pixel masks: give --truth-masks"),
    # evaluate with masks
    ("masks-missing", ["evaluate", "{T}/masked/images", "--truth-masks", "{T}/nope", "--model", "demo"], 2,
     "--truth-masks {T}/nope: not a folder; give the folder of the masks (VOC's SegmentationClass)"),
    ("masks-value-300", ["evaluate", "{T}/masked/images", "--truth-masks", "{T}/masked/masks", "--mask-labels",
                         "{T}/mask_300.csv", "--model", "demo"], 2, NOT_A_MASK),
    ("masks-box-gate", ["evaluate", "{T}/masked/images", "--truth-masks", "{T}/masked/masks", "--model", "demo",
                        "--fail-under", "pointing=0.5"], 2,
     "--fail-under pointing=0.5: unknown metric 'pointing'; choose one of miou, relevance_mass, relevance_rank"),
]


@pytest.mark.parametrize("args, code, message", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_a_bad_input_is_one_line_and_an_exit_status(bad, args, code, message):
    result = invoke(*(arg.replace("{T}", str(bad)) for arg in args))
    assert result.exit_code == code, result.stderr
    assert only_line(result) == "camcli: error: " + message.replace("{T}", str(bad))


def test_an_empty_path_is_a_usage_error_not_the_working_folder(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(bad / "scenes")  # "" was read as ".": this folder's images were explained
    result = invoke("explain", "", "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == (
        "Error: Invalid value for 'PATHS...': an empty path names no image or folder")
    assert not (tmp_path / "out").exists()


def test_digits_that_are_another_class_s_label_say_which_class_was_taken(bad, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", bad / "scenes" / "circle_1.png", "--model", bad / "gap.keras", "--preprocess", "none",
                    "--labels", bad / "labels_numbers.txt", "--class", "2", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert only_line(result) == ("camcli: warning: --class 2 is the class labelled '2' (index 1), not class index 2 "
                                 "(labelled '0'): labels win over indices")
    assert read_json(out / "circle_1.json")["explanations"][0]["class_index"] == 1


def _explainer():
    import tiny_models

    return tiny_models.explainer_for(tiny_models.gap_dense())


def _method_set():
    import tiny_models

    from camcli.explain.explainer import MethodSet
    from camcli.models.loading import wrap_model

    return MethodSet.of(wrap_model(tiny_models.gap_dense(), preprocess="none"), methods=["gradcam", "cam"])


def _batch(*shape):
    import numpy as np

    return np.zeros(shape, np.float32)


BATCH = ("`batch` is a float32 array (images, 8, 8, 3) of preprocessed images, {what}; Explainer.preprocess makes "
         "one, or Explainer.explain takes images as they are")
IDS = "; give 1x1 class indices (images x classes asked for; -1 keeps a request)"
LIBRARY_CASES = [
    ("explain-none", lambda: _explainer().explain(None),
     "give a list of images (numpy arrays or Pillow images), not NoneType"),
    ("explain-number", lambda: _explainer().explain(5),
     "give a list of images (numpy arrays or Pillow images), not int"),
    ("explain-path", lambda: _explainer().explain("cat.png"),
     "give a list of images (numpy arrays or Pillow images), not the path 'cat.png'; camcli.explain_paths reads "
     "and explains files"),
    ("explain-dict", lambda: _explainer().explain({"a": 1}),
     "give a list of images (numpy arrays or Pillow images), not dict"),
    ("batch-one-image", lambda: _explainer().explain_batch(_batch(8, 8, 3)), BATCH.format(what="not shape (8, 8, 3)")),
    ("batch-other-size", lambda: _explainer().explain_batch(_batch(1, 9, 9, 3)),
     BATCH.format(what="not shape (1, 9, 9, 3)")),
    ("batch-none", lambda: _explainer().explain_batch(None), BATCH.format(what="not NoneType")),
    ("batch-text", lambda: _explainer().explain_batch("abc"), BATCH.format(what="not str")),
    ("batch-ragged", lambda: _explainer().explain_batch([[1, 2], [3]]),
     BATCH.format(what="not shape (2,)").replace(", not shape (2,)", "; it holds something else (text, or rows of "
                                                                      "different lengths)")),
    ("set-batch-other-size", lambda: _method_set().explain_batch(_batch(2, 4, 4, 3)),
     BATCH.format(what="not shape (2, 4, 4, 3)")),
    ("class-ids-text", lambda: _explainer().explain_batch(_batch(1, 8, 8, 3), class_ids="a"),
     "`class_ids` holds something other than numbers" + IDS),
    ("class-ids-count", lambda: _explainer().explain_batch(_batch(1, 8, 8, 3), class_ids=[[1, 2]]),
     "`class_ids` has 2 values" + IDS),
    ("class-ids-negative", lambda: _explainer().explain_batch(_batch(1, 8, 8, 3), class_ids=[-5]),
     "`class_ids` holds -5.0, which is no class index" + IDS),
    ("class-ids-fraction", lambda: _explainer().explain_batch(_batch(1, 8, 8, 3), class_ids=[1.5]),
     "`class_ids` holds 1.5, which is no class index" + IDS),
    ("paths-empty", lambda: __import__("camcli").explain_paths("", out="x"),
     "an empty path names no image or folder: give the images and folders to read"),
    ("evaluate-classes", lambda: __import__("camcli").evaluate_paths(["x"], truth="t.csv", classes=["top1"]),
     "evaluate scores the class `explain_class` names (the top-1 class, or the truth's): `classes` does not apply"),
    ("audit-option", lambda: __import__("camcli").audit_paths(["x"], neighbors=5),
     "audit_paths takes no option 'neighbors'; did you mean 'neighbours'?"),
]


@pytest.mark.parametrize("call, message", [case[1:] for case in LIBRARY_CASES], ids=[case[0] for case in LIBRARY_CASES])
def test_a_bad_library_call_raises_one_line(call, message):
    with pytest.raises(CamcliError) as raised:
        call()
    assert isinstance(raised.value, UsageError)
    assert str(raised.value) == message and "\n" not in str(raised.value)


def test_no_images_explain_to_no_results():
    assert _explainer().explain([]) == [] and _method_set().explain([]) == []
    assert _explainer().explain_batch(_batch(0, 8, 8, 3)) == [] and _explainer().explain_batch([]) == []


@pytest.mark.slow
@pytest.mark.parametrize("given, options, message", [
    ("list", {}, "explain_dataset takes a ray.data.Dataset (e.g. ray.data.read_binary_files(folder, "
                 "include_paths=True)), not list; camcli.explain_paths reads paths"),
    ("none", {}, "explain_dataset takes a ray.data.Dataset (e.g. ray.data.read_binary_files(folder, "
                 "include_paths=True)), not NoneType; camcli.explain_paths reads paths"),
    ("dataset", {"shard": (1, 2)}, "explain_dataset takes no `shard`: Ray schedules the rows; use camcli explain "
                                   "for it"),
    ("dataset", {"concurrency": (3, 1)}, "`concurrency=(3, 1)` must be a number of actors (at least 1), or (min, max)"),
    ("dataset", {"rows_per_call": 0}, "`rows_per_call=0` must be at least 1"),
    ("dataset", {"batch_size": 0}, "`batch_size=0` must be at least 1"),
], ids=["list", "none", "shard", "concurrency", "rows-per-call", "batch-size"])
def test_a_bad_ray_call_raises_one_line_before_any_actor_starts(bad, tmp_path, given, options, message, ray_data):
    import camcli.ray

    ray = ray_data

    ds = {"list": [str(bad / "scenes")], "none": None}.get(given)
    if given == "dataset":
        ds = ray.data.from_items([{"path": "x"}])  # never read: the options fail first
    with pytest.raises(CamcliError) as raised:
        camcli.ray.explain_dataset(ds, tmp_path / "out", model="demo", **options)
    assert str(raised.value) == message and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


# --- 9. the README says how to install today, MethodSet, Ray's CPUs and binary masks -----------------------


def test_the_readme_and_help_say_what_issue_28_found_missing():
    from conftest import REPO

    from camcli.cli import cli

    readme = (REPO / "README.md").read_text("utf-8")
    assert 'pip install ".[cpu]"' in readme and "dist/keras_camcli-" in readme  # today: a clone or a wheel
    assert "the index name will be keras-camcli" in readme and 'pip install "keras-camcli[cpu]"' in readme
    assert "camcli.MethodSet.of(" in readme
    assert "The actors must leave a whole CPU free for Ray's read tasks" in readme
    assert "`--mask-labels` with\n  the line `255,CLASS`" in readme
    evaluate = cli.commands["evaluate"]
    helps = {param.name: param.help for param in evaluate.params}
    assert "--mask-labels with the line 255,CLASS" in helps["truth_masks"]
    assert "255,CLASS" in helps["mask_labels"]
