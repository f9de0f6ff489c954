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
