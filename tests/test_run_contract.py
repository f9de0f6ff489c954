"""The run's contract with the user's folder and with batch schedulers, end to end on the demo model:

- camcli replaces only what camcli wrote (per-image files fail the image; run-level files refuse the run);
- --resume skips only images whose fingerprint matches, and counts skipped and recomputed apart;
- --fail-fast explains nothing after a failure (SIGTERM: test_reliability's signal tests);
- a full disk stops the run at its first occurrence with one line, and the summary is still written.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, read_json
from click.testing import CliRunner
from PIL import Image

from camcli.cli import cli

REPO = Path(__file__).resolve().parents[1]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_scenes(scenes, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for path in scenes:
        shutil.copy(path, folder / path.name)
    return folder


def closing_line(result):
    return [line for line in result.stderr.splitlines() if line.startswith("camcli: explained")][-1]


# --- camcli replaces only what camcli wrote ---------------------------------------------------------------


def test_user_files_in_out_are_never_overwritten(scenes, tmp_path):
    photos = copy_scenes(scenes, tmp_path / "photos")
    first = scenes[0].stem
    user_json = photos / f"{first}.json"
    user_json.write_text('{"annotations": [[1, 2, 3, 4]]}\n', "utf-8")  # an annotation tool's file
    user_overlay = photos / f"{scenes[1].stem}.gradcam.4.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(user_overlay)  # a PNG of the user's own
    before = {path.name: digest(path) for path in photos.iterdir()}

    result = invoke("explain", photos, "--model", "demo", "--out", photos, "-q")

    assert result.exit_code == 1, result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("camcli: failed:")]
    assert failures[0] == (f"camcli: failed: {photos / scenes[0].name}: {user_json} exists and was not written by "
                           "camcli; write to another output folder (--out) (camcli never replaces files it did not "
                           "write)")
    for path, sha in before.items():  # inputs and the user's files, byte for byte
        assert digest(photos / path) == sha, path
    summary = read_json(photos / "summary.json")
    assert summary["failed"] == len(failures) >= 1
    # The user's PNG is an image too (it carries no camcli marker); every other image was written.
    assert summary["images"] == len(scenes) + 1
    assert summary["ok"] == summary["images"] - summary["failed"] >= len(scenes) - 1
    assert not list(photos.glob(f"{first}.*.png"))  # the failed image wrote nothing
    # A second run over the same folder replaces its own files and still leaves the user's alone.
    again = invoke("explain", photos, "--model", "demo", "--out", photos, "-q")
    assert again.exit_code == 1
    assert digest(user_json) == before[user_json.name] and digest(user_overlay) == before[user_overlay.name]


@pytest.mark.parametrize("name, options", [("summary.json", []), ("index.html", ["--report"])])
def test_a_foreign_run_level_file_refuses_the_run(scenes, tmp_path, name, options):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("my own notes\n", "utf-8")
    result = invoke("explain", scenes[0], "--model", "demo", "--out", out, *options)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"camcli: error: {out / name} exists and was not written by camcli; write to "
                                     "another output folder (--out) (camcli never replaces files it did not write)")
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing was written
    assert (out / name).read_text("utf-8") == "my own notes\n"


def test_evaluate_refuses_a_foreign_evaluation_json(tmp_path):
    from camcli.models.demo.samples import write_tagged_samples

    folder = tmp_path / "tagged"
    write_tagged_samples(folder, count=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.json").write_text('{"mine": true}', "utf-8")
    result = invoke("evaluate", folder, "--truth", folder / "truth.csv", "--model", "demo", "--out", out,
                    "--steps", "0")
    assert result.exit_code == 2
    assert "evaluation.json exists and was not written by camcli" in result.stderr
    assert (out / "evaluation.json").read_text("utf-8") == '{"mine": true}'


# --- --resume that cannot lie ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed_folder(scenes, tmp_path_factory):
    """A finished run of the six scenes, copied fresh for each test."""
    out = tmp_path_factory.mktemp("first") / "out"
    result = invoke("explain", *scenes, "--model", "demo", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    return out


def resume(scenes, folder, *options):
    result = invoke("explain", *scenes, "--model", "demo", "--out", folder, "--resume", "--json", *options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


def test_resume_skips_an_unchanged_run(scenes, resumed_folder, tmp_path):
    folder = shutil.copytree(resumed_folder, tmp_path / "out")
    summary, result = resume(scenes, folder)
    assert (summary["skipped"], summary["recomputed"], summary["ok"]) == (6, 0, 6)
    assert "explained 0 of 6 images (0 failed, 6 unchanged and skipped)" in closing_line(result)


@pytest.mark.parametrize("options", [
    ["--alpha", "0.3"], ["--method", "gradcam++"],  # make test-fast: one overlay option and one map option
    *(pytest.param(options, marks=pytest.mark.slow) for options in (
        ["--colormap", "viridis"], ["--top-k", "2"], ["--box-threshold", "0.5"], ["--save-heatmap"], ["--draw-box"],
        ["--class", "top2"], ["--eigen-smooth"], ["--layer", "conv5"], ["--format", "webp"], ["--max-size", "32"])),
], ids=lambda options: " ".join(options))
def test_resume_recomputes_after_any_change_that_shapes_the_outputs(scenes, resumed_folder, tmp_path, options):
    folder = shutil.copytree(resumed_folder, tmp_path / "out")
    summary, result = resume(scenes, folder, *options)
    assert (summary["skipped"], summary["recomputed"], summary["ok"]) == (0, 6, 6)
    assert "6 recomputed" in closing_line(result)
    record = read_json(folder / f"{scenes[0].stem}.json")
    assert record["fingerprint"] == summary["fingerprint"]
    # And the recomputed outputs now stand: a second resume with the same options skips them all.
    again, _ = resume(scenes, folder, *options)
    assert (again["skipped"], again["recomputed"]) == (6, 0)


@pytest.mark.slow
def test_resume_after_random_weights_recomputes_with_real_ones(scenes, tmp_path):
    """The issue's case: a --weights none run, then the real weights with --resume."""
    out = tmp_path / "out"
    first = invoke("explain", *scenes[:2], "--model", "mobilenetv2", "--weights", "none", "--out", out, "-q")
    assert first.exit_code == 0, first.stderr
    random_top = read_json(out / f"{scenes[0].stem}.json")["predictions"]
    assert read_json(out / "summary.json")["pretrained"] is False
    weights = Path(os.environ["KERAS_HOME"]) / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    if not weights.exists():
        pytest.skip("real MobileNetV2 weights not found in ../shared/imagenet (present in CI)")
    second = invoke("explain", *scenes[:2], "--model", "mobilenetv2", "--out", out, "--resume", "--json")
    assert second.exit_code == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["skipped"], summary["recomputed"], summary["pretrained"]) == (0, 2, True)
    record = read_json(out / f"{scenes[0].stem}.json")
    assert record["predictions"] != random_top and "warning" not in record


def test_resume_recomputes_an_image_whose_overlay_was_deleted(scenes, resumed_folder, tmp_path):
    folder = shutil.copytree(resumed_folder, tmp_path / "out")
    overlay = read_json(folder / f"{scenes[2].stem}.json")["explanations"][0]["overlay"]
    (folder / overlay).unlink()
    summary, _ = resume(scenes, folder)
    assert (summary["skipped"], summary["recomputed"]) == (5, 1)
    assert (folder / overlay).is_file()


# --- runs that end well ------------------------------------------------------------------------------------


def test_fail_fast_explains_nothing_after_the_first_failure(scenes, tmp_path):
    photos = copy_scenes(scenes, tmp_path / "photos")
    (photos / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorted first
    out = tmp_path / "out"
    result = invoke("explain", photos, "--model", "demo", "--out", out, "--fail-fast", "--batch-size", "2", "-q")
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("camcli: failed:")] == [
        f"camcli: failed: {photos / 'a_broken.png'}: not a valid PNG image (file is truncated or corrupt)"
    ] or "a_broken.png" in result.stderr
    assert not list(out.glob("*.gradcam.*.png"))  # nothing explained after the failure
    summary = read_json(out / "summary.json")
    assert (summary["ok"], summary["failed"]) == (0, 1)


def _fill_disk_after(monkeypatch, writes):
    """Writing an overlay raises ENOSPC once `writes` overlays have been written, as a full disk would."""
    from camcli.runs import writer

    calls = {"count": 0}
    real = writer.save_picture

    def save_picture(path, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(writer, "save_picture", save_picture)
    return calls


def test_a_full_disk_stops_the_run_at_its_first_occurrence(scenes, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(40):
        shutil.copy(scenes[i % len(scenes)], photos / f"{i:02d}.png")
    calls = _fill_disk_after(monkeypatch, writes=2)
    out = tmp_path / "out"
    result = invoke("explain", photos, "--model", "demo", "--out", out, "--batch-size", "2", "-q")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("camcli: error:")]
    assert len(errors) == 1 and "No space left on device (ENOSPC" in errors[0]
    assert errors[0].endswith("the run stopped: free space or fix the folder, then rerun with --resume")
    assert "internal error" not in result.stderr
    summary = read_json(out / "summary.json")
    assert summary["ok"] == 2 and summary["stopped"].startswith(f"cannot write to {out}: No space left on device")
    assert 1 <= summary["failed"] <= 8  # the images already in flight, not one per image of the 40
    assert summary["ok"] + summary["failed"] < 40  # the rest were never attempted
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("camcli: failed:")]
    assert len(failed_lines) == 1 and "No space left on device" in failed_lines[0]
    assert calls["count"] <= 2 + 8


@pytest.mark.slow
def test_a_real_full_tmpfs_stops_the_run_with_one_line(scenes, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    out = tmp_path / "small"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(out)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        for i in range(60):
            shutil.copy(scenes[i % len(scenes)], photos / f"{i:02d}.png")
        result = invoke("explain", photos, "--model", "demo", "--out", out, "-q")
        assert result.exit_code == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("camcli: error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
        assert len([line for line in result.stderr.splitlines() if line.startswith("camcli: failed:")]) <= 20
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".camcli.")]
        assert leftovers == []  # no half-written files
        if (out / "summary.json").exists():  # where it could still be written, it says why
            assert "No space left on device" in read_json(out / "summary.json")["stopped"]
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_an_unexpected_error_is_one_line_naming_the_image_and_the_stage(scenes, tmp_path, monkeypatch):
    from camcli.runs import writer

    def broken_blend(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(writer, "draw_overlay", broken_blend)
    out = tmp_path / "out"
    result = invoke("explain", scenes[0], "--model", "demo", "--out", out, "-q")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"camcli: failed: {scenes[0]}: internal error while writing outputs: "
                                     "ZeroDivisionError: float division by zero (rerun with --debug for the traceback)")
    with pytest.raises(ZeroDivisionError):  # --debug, given where the hint says, shows the real error
        CliRunner().invoke(cli, ["explain", str(scenes[0]), "--model", "demo", "--out", str(out), "--debug"],
                           catch_exceptions=False)
