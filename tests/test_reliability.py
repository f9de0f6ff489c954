"""Reliability of `camcli explain` end to end: bad inputs, --fail-fast, kill and --resume, Ctrl-C,
--shard K/N with `camcli summary`, output-folder safety, and fuzzed input files.

Runs go through Click's CliRunner in this process, except where a real process is the point
(SIGKILL, SIGINT): those start `python -m camcli` and cost a TensorFlow import each, so there are
only two. The model is tiny (8x8 input), built in code and saved once for the module.
"""

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from cli_helpers import invoke, read_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_fixtures import damaged_images, encode, noise
from PIL import Image

from camcli.errors import ImageLoadError
from camcli.runs.decode import load_rgb
from camcli.runs.discovery import discover, printable
from camcli.runs.runner import in_shard

REPO = Path(__file__).resolve().parents[1]
MANY = 200  # images in the kill / Ctrl-C runs


# --- helpers ---------------------------------------------------------------------------------------


def write_png(path, size=(12, 9), seed=0):
    """A random RGB PNG of `size` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(Image.fromarray(noise(size[1], size[0], seed=seed)), "PNG"))
    return path


def is_summary(path, out):
    return path.parent == out and re.fullmatch(r"summary(\.\d+-of-\d+)?\.json", path.name) is not None


def image_records(out):
    """{record["image"]: (json path, record)} for every image JSON under `out`."""
    records = {}
    for path in out.rglob("*.json"):
        if is_summary(path, out) or not path.is_file():
            continue
        record = read_json(path)
        assert record["image"] not in records, f"{record['image']} has two JSON files"
        records[record["image"]] = (path, record)
    return records


def failed_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("camcli: failed: ")]


def output_files(out):
    """Relative paths of every finished file under `out` (the hidden temporaries left out)."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def snapshot(folder, skip):
    """{relative path: bytes} of every file under `folder` except those under `skip`."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in filenames:
            path = Path(dirpath, name)
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def camcli_process(*args, cwd):
    """Start `python -m camcli ARGS` (the working tree's camcli), stderr piped."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "camcli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_outputs(proc, out, count, timeout=120):
    """Poll until `out` holds at least `count` image JSON files (the process still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"camcli ended (rc {proc.returncode}) before {count} outputs existed:\n{err}")
        try:
            done = sum(1 for e in os.scandir(out) if e.name.endswith(".json") and not e.name.startswith("summary"))
        except FileNotFoundError:
            done = 0
        if done >= count:
            return
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no {count} outputs in {out} after {timeout} s")


def png_header_only(width, height):
    """A PNG with a valid signature and IHDR claiming `width` x `height` pixels, and no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Path (str) of tiny_models.gap_dense() saved as .keras."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    with warnings.catch_warnings():  # Keras' own numpy-2 DeprecationWarning while saving
        warnings.simplefilter("ignore", DeprecationWarning)
        tiny_models.gap_dense().save(path)
    return str(path)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """MANY small RGB PNGs in one folder, read-only input for the kill and Ctrl-C runs."""
    root = tmp_path_factory.mktemp("many")
    for i in range(MANY):
        write_png(root / f"img{i:03d}.png", (48, 32), seed=i)
    return root


# --- 1. a corpus of bad and odd inputs, in one folder run --------------------------------------------


def build_corpus(root):
    """Write the corpus; return (good, bad): {display: path} of files that must succeed / fail."""
    good, bad = {}, {}

    def add(table, path):
        table[printable(path)] = path
        return path

    # Plain good images.
    for i in range(3):
        add(good, write_png(root / f"good{i}.png", (14, 10), seed=i))

    # Must fail.
    add(bad, root / "empty.jpg").write_bytes(b"")
    jpeg = encode(Image.fromarray(noise(64, 64, seed=10)), "JPEG", quality=95)
    add(bad, root / "trunc.jpg").write_bytes(jpeg[: len(jpeg) * 6 // 10])
    png = encode(Image.fromarray(noise(64, 64, seed=11)), "PNG")
    add(bad, root / "trunc.png").write_bytes(png[: len(png) * 6 // 10])
    add(bad, root / "text.jpg").write_text("this is not a JPEG\n", "utf-8")
    add(bad, root / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    add(bad, root / "dangling.jpg").symlink_to(root / "does-not-exist.jpg")
    add(bad, root / "selfloop.jpg").symlink_to(root / "selfloop.jpg")

    # Must succeed, however odd.
    add(good, root / "png_named.jpg").write_bytes(encode(Image.fromarray(noise(9, 7, seed=12)), "PNG"))
    add(good, root / "one.png").write_bytes(encode(Image.fromarray(noise(1, 1, seed=13)), "PNG"))
    add(good, root / "grey.png").write_bytes(encode(Image.fromarray(noise(10, 12, seed=14)[:, :, 0]), "PNG"))
    add(good, root / "rgba.png").write_bytes(encode(Image.fromarray(noise(10, 12, 4, seed=15)), "PNG"))
    palette = Image.fromarray(noise(10, 12, seed=16)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    add(good, root / "palette.png").write_bytes(encode(palette, "PNG"))
    cmyk = Image.frombytes("CMYK", (12, 10), noise(10, 12, 4, seed=17).tobytes())
    add(good, root / "cmyk.jpg").write_bytes(encode(cmyk, "JPEG"))
    deep = Image.fromarray(noise(10, 12, 1, seed=18, dtype=np.uint16, high=65536)[:, :, 0])
    assert deep.mode == "I;16"
    add(good, root / "deep16.png").write_bytes(encode(deep, "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    add(good, root / "exif.jpg").write_bytes(encode(Image.fromarray(noise(10, 20, seed=19)), "JPEG", exif=exif))
    frames = [Image.fromarray(noise(8, 11, seed=20 + i)).convert("P") for i in range(3)]
    frames[0].save(add(good, root / "anim.gif"), save_all=True, append_images=frames[1:], duration=40, loop=0)
    add(good, write_png(root / "with space.png", seed=23))
    add(good, write_png(root / "ünïcødé 猫.png", seed=24))
    add(good, root / "cat.jpg").write_bytes(encode(Image.fromarray(noise(9, 13, seed=25)), "JPEG"))
    add(good, write_png(root / "cat.png", seed=26))

    # A directory with symlink loops: walked once, silently.
    add(good, write_png(root / "loopdir" / "inner.png", seed=27))
    (root / "loopdir" / "back").symlink_to(root, target_is_directory=True)
    (root / "loopdir" / "self").symlink_to(root / "loopdir", target_is_directory=True)

    # Names that are not UTF-8 (skipped where the file system refuses them).
    non_utf8 = True
    for name, table, data in ((b"caf\xe9.png", good, encode(Image.fromarray(noise(9, 9, seed=28)), "PNG")),
                              (b"bad\xff.jpg", bad, b"not an image either\n")):
        raw = os.fsencode(root) + b"/" + name
        try:
            with open(raw, "wb") as fp:
                fp.write(data)
        except OSError:
            non_utf8 = False
            continue
        add(table, Path(os.fsdecode(raw)))
    return good, bad, non_utf8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("corpus")
    good, bad, non_utf8 = build_corpus(root)
    out = tmp_path_factory.mktemp("corpus_out")
    result = invoke("explain", root, "--model", model, "--out", out, "--batch-size", 3)
    return {"root": root, "good": good, "bad": bad, "non_utf8": non_utf8, "out": out, "result": result}


def test_corpus_exits_1_without_traceback(corpus):
    result = corpus["result"]
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    good, bad = len(corpus["good"]), len(corpus["bad"])
    assert f"camcli: explained {good} of {good + bad} images ({bad} failed)" in result.stderr


def test_corpus_each_failing_file_gets_exactly_one_stderr_line(corpus):
    stderr = corpus["result"].stderr
    lines = failed_lines(stderr)
    assert len(lines) == len(corpus["bad"]), stderr
    for display in corpus["bad"]:
        naming = [line for line in stderr.splitlines() if display in line]
        assert len(naming) == 1, (display, stderr)
        assert naming[0].startswith(f"camcli: failed: {display}: ")
        assert naming[0] != f"camcli: failed: {display}: "
    for display in corpus["good"]:
        assert not any(display + ":" in line for line in lines), display


def test_corpus_summary_lists_exactly_the_failing_files(corpus):
    summary = read_json(corpus["out"] / "summary.json")
    failures = {failure["image"]: failure["error"] for failure in summary["failures"]}
    assert len(failures) == len(summary["failures"])
    assert set(failures) == set(corpus["bad"])
    assert all(isinstance(error, str) and error.strip() for error in failures.values())
    assert (summary["images"], summary["ok"], summary["failed"]) == (
        len(corpus["good"]) + len(corpus["bad"]), len(corpus["good"]), len(corpus["bad"]))
    root = corpus["root"]
    assert failures[str(root / "empty.jpg")] == "empty file (0 bytes)"
    assert failures[str(root / "text.jpg")] == "not an image (content is text)"
    assert failures[str(root / "trunc.jpg")].startswith("truncated JPEG")
    assert "PNG" in failures[str(root / "trunc.png")]
    assert failures[str(root / "bomb.png")].startswith("decompression bomb")
    assert failures[str(root / "dangling.jpg")] == "broken symlink"


def test_corpus_every_good_image_has_its_json_and_overlay(corpus):
    out = corpus["out"]
    records = image_records(out)
    assert set(records) == set(corpus["good"])  # nothing twice through the symlink loops, no bad one
    for display, (path, record) in records.items():
        assert path.resolve().is_relative_to(out.resolve())
        source_rgb = load_rgb(corpus["good"][display])
        assert (record["height"], record["width"]) == source_rgb.shape[:2]
        [explanation] = record["explanations"]
        with Image.open(out / explanation["overlay"]) as overlay:
            overlay.load()
            assert overlay.size == (record["width"], record["height"])


def test_corpus_exif_rotation_and_same_stem_outputs(corpus):
    root, out = corpus["root"], corpus["out"]
    records = image_records(out)
    exif = records[str(root / "exif.jpg")][1]
    assert (exif["width"], exif["height"]) == (10, 20)  # stored 20 wide, 10 high; shown rotated
    assert records[str(root / "one.png")][1]["width"] == 1
    cat_jpg, cat_png = records[str(root / "cat.jpg")][0], records[str(root / "cat.png")][0]
    assert {cat_jpg.name, cat_png.name} == {"cat.jpg.json", "cat.png.json"}
    assert read_json(cat_jpg)["width"] == 13 and read_json(cat_png)["width"] == 12


def test_corpus_non_utf8_names(corpus):
    if not corpus["non_utf8"]:
        pytest.skip("this file system refuses names that are not UTF-8")
    records = image_records(corpus["out"])
    display = printable(Path(os.fsdecode(os.fsencode(corpus["root"]) + b"/caf\xe9.png")))
    assert display.endswith("caf\\xe9.png")
    assert display in records
    assert (corpus["out"] / os.fsdecode(b"caf\xe9.json")).is_file()


# --- 2. --fail-fast ------------------------------------------------------------------------------------


def test_fail_fast_stops_at_the_first_failure(model, tmp_path):
    root = tmp_path / "in"
    (root / "000_bad.jpg").parent.mkdir()
    (root / "000_bad.jpg").write_text("not an image\n", "utf-8")
    for i in range(20):
        write_png(root / f"img{i:02d}.png", seed=i)
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", model, "--out", out, "--batch-size", 1, "--fail-fast")
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert failed_lines(result.stderr) == [f"camcli: failed: {root / '000_bad.jpg'}: not an image (content is text)"]
    summary = read_json(out / "summary.json")
    assert summary["failed"] == 1 and summary["interrupted"] is False
    # Observed: the batch being filled when the failure came is still explained (one image here).
    assert summary["ok"] <= 1
    assert len(image_records(out)) == summary["ok"] < 20


def test_ctrl_c_during_fail_fast_run_still_exits_130(model, tmp_path, monkeypatch):
    from camcli.explain.explainer import Explainer

    root = tmp_path / "in"
    for i in range(20):
        write_png(root / f"img{i:02d}.png", seed=i)
    original, calls = Explainer.explain_batch, []

    def explain_then_ctrl_c(self, batch, *rest, **options):
        calls.append(1)
        if len(calls) == 3:
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # camcli's handler
            signal.raise_signal(signal.SIGINT)
        return original(self, batch, *rest, **options)

    monkeypatch.setattr(Explainer, "explain_batch", explain_then_ctrl_c)
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", model, "--out", out, "--batch-size", 1, "--fail-fast")
    summary = read_json(out / "summary.json")
    assert summary["ok"] < 20
    assert summary["interrupted"] is True
    assert result.exit_code == 130


# --- 3. SIGKILL part-way, then --resume -----------------------------------------------------------------


def assert_no_partial_outputs(out):
    counts = {".json": 0, ".png": 0, ".npy": 0}
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), path  # a hidden temporary: allowed
            continue
        counts[path.suffix] += 1
        if path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        else:
            pytest.fail(f"unexpected file {path}")
    return counts


@pytest.mark.slow
def test_kill_part_way_then_resume_gives_the_same_outputs(model, many, tmp_path):
    out = tmp_path / "killed"
    args = ["explain", many, "--model", model, "--batch-size", 1, "--save-heatmap", "-q"]
    proc = camcli_process(*args, "--out", out, cwd=tmp_path)
    wait_for_outputs(proc, out, 10)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists(), "the run finished before it was killed"

    counts = assert_no_partial_outputs(out)
    assert 10 <= counts[".json"] < MANY
    # An image whose heatmaps were being written has a pending record (naming them, so that the
    # resumed run may replace them); a complete image has its full record.
    records = [read_json(path) for path in out.glob("*.json")]
    complete = sum("explanations" in record for record in records)
    assert all("explanations" in record or record.get("pending") for record in records)
    assert complete >= 8

    resumed = invoke(*args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    summary = read_json(out / "summary.json")
    assert summary["ok"] == summary["images"] == MANY
    assert summary["skipped"] == complete
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    reference = tmp_path / "reference"
    straight = invoke(*args, "--out", reference)
    assert straight.exit_code == 0, straight.stderr
    assert output_files(out) == output_files(reference)
    assert len(output_files(out)) == 3 * MANY + 1
    for name in output_files(out):
        if name == "summary.json":
            continue
        if name.endswith(".json"):
            assert read_json(out / name) == read_json(reference / name), name
        else:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    timing = ("elapsed_seconds", "images_per_second", "skipped", "recomputed")
    reference_summary = read_json(reference / "summary.json")
    assert {k: v for k, v in summary.items() if k not in timing} == {
        k: v for k, v in reference_summary.items() if k not in timing}


# --- 4. SIGINT --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [
    (signal.SIGINT, 130, "camcli: interrupted: finishing the current batch"),
    # What Slurm, Kubernetes, `docker stop` and `timeout` send: it ends the run as the first Ctrl-C does.
    (signal.SIGTERM, 143, "camcli: terminated (SIGTERM): finishing the current batch"),
], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_batch_writes_the_summary_and_exits_128_plus_n(model, many, tmp_path, signum, code,
                                                                             said):
    out = tmp_path / "out"
    proc = camcli_process("explain", many, "--model", model, "--batch-size", 4, "--out", out, cwd=tmp_path)
    wait_for_outputs(proc, out, 10)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert said in stderr
    summary = read_json(out / "summary.json")
    assert summary["interrupted"] is True
    assert summary["images"] == MANY
    assert 10 <= summary["ok"] < MANY
    records = image_records(out)
    assert len(records) == summary["ok"]
    for _, record in records.values():
        for explanation in record["explanations"]:
            with Image.open(out / explanation["overlay"]) as overlay:
                overlay.load()
    assert_no_partial_outputs(out)


# --- 5. --shard K/N and `camcli summary` ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_in")
    paths = []
    for i in range(12):
        sub = ("", "a/", "a/b/")[i % 3]
        paths.append(write_png(root / f"{sub}img{i:02d}.png", seed=100 + i))
    return root, {str(p) for p in paths}


@pytest.mark.parametrize("count", [1, 3])
def test_shards_cover_every_image_once_and_summary_merges_them(model, shard_tree, tmp_path, count):
    root, images = shard_tree
    out = tmp_path / "out"
    per_shard = {}
    for k in range(1, count + 1):
        before = set(image_records(out)) if out.exists() else set()
        result = invoke("explain", root, "--model", model, "--out", out, "--shard", f"{k}/{count}", "-q")
        assert result.exit_code == 0, result.stderr
        shard_summary = read_json(out / f"summary.{k}-of-{count}.json")
        assert shard_summary["shard"] == {"index": k, "count": count}
        records = image_records(out)
        per_shard[k] = set(records) - before
        assert shard_summary["images"] == shard_summary["ok"] == len(per_shard[k])
        for display in per_shard[k]:  # the split is the one in_shard computes from the output stem
            stem = records[display][0].relative_to(out).as_posix().removesuffix(".json")
            assert in_shard(stem, (k, count))
    assert not (out / "summary.json").exists()
    assert set().union(*per_shard.values()) == images
    assert sum(len(s) for s in per_shard.values()) == len(images)  # no image in two shards
    if count > 1:
        assert all(per_shard.values()), "a shard got no image: pick other names"

    merged = invoke("summary", out)
    assert merged.exit_code == 0, merged.stderr
    assert merged.stdout == f"{len(images)} images from {count} shards: {len(images)} ok, 0 failed\n"
    summary = read_json(out / "summary.json")
    assert (summary["images"], summary["ok"], summary["failed"]) == (len(images), len(images), 0)
    assert summary["missing_shards"] == []

    if count == 3:
        (out / "summary.2-of-3.json").unlink()
        partial = invoke("summary", out)
        assert partial.exit_code == 1
        assert "missing shards: 2/3" in partial.stdout
        assert read_json(out / "summary.json")["missing_shards"] == [2]


@pytest.mark.parametrize(("value", "fragment"), [
    ("0/3", "0-based"),
    ("4/3", "shards are numbered 1 to N"),
    ("x", "'x' is not K/N"),
    ("1/0", "shards are numbered 1 to N"),
    ("1/2/3", "is not K/N"),
    ("-1/3", "shards are numbered 1 to N"),
])
def test_bad_shard_values_are_usage_errors(model, shard_tree, tmp_path, value, fragment):
    root, _ = shard_tree
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", model, "--out", out, "--shard", value)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "--shard" in error and fragment in error
    if value == "0/3":
        assert "$((i+1))/N" in error
    assert not out.exists()


# --- 6. the shard split is a function of the relative path only ---------------------------------------------


def test_in_shard_partitions_stems_independently_of_order():
    stems = [f"dir{i % 7}/sub {i % 3}/photo_{i}" for i in range(300)] + ["ünïcødé/猫", "caf\udce9", "a.jpg"]
    for count in (1, 2, 3, 5):
        owner = {stem: [k for k in range(1, count + 1) if in_shard(stem, (k, count))] for stem in stems}
        assert all(len(ks) == 1 for ks in owner.values())  # exactly one shard each
        shuffled = stems[:]
        random.Random(count).shuffle(shuffled)
        assert {stem: [k for k in range(1, count + 1) if in_shard(stem, (k, count))] for stem in shuffled} == owner
        if count > 1:
            assert len({ks[0] for ks in owner.values()}) == count  # every shard gets some


def test_discovery_gives_the_same_split_whatever_the_root_is_called(shard_tree, tmp_path, monkeypatch):
    root, _ = shard_tree
    absolute, _ = discover([root], tmp_path / "out")
    monkeypatch.chdir(root.parent)
    relative, _ = discover([root.name], tmp_path / "out")
    via_dot, _ = discover(["./" + root.name + "/"], tmp_path / "out")
    assert [t.out_stem for t in absolute] == [t.out_stem for t in relative] == [t.out_stem for t in via_dot]
    assert [t.display for t in absolute] != [t.display for t in relative]


def test_broken_symlink_is_reported_by_exactly_one_shard_whatever_the_root_is_called(model, tmp_path, monkeypatch):
    root = tmp_path / "in"
    for i in range(4):
        write_png(root / f"img{i}.png", seed=i)
    # A name whose (absolute, relative) displays fall in shards such that it is counted 0 or 2 times.
    for n in range(200):
        name = f"broken{n}.jpg"
        counted = in_shard(str(root / name), (1, 2)) + in_shard(f"in/{name}", (2, 2))
        if counted != 1:
            break
    (root / name).symlink_to(root / "missing.jpg")
    out = tmp_path / "out"
    assert invoke("explain", root, "--model", model, "--out", out, "--shard", "1/2", "-q").exit_code in (0, 1)
    monkeypatch.chdir(tmp_path)
    assert invoke("explain", "in", "--model", model, "--out", out, "--shard", "2/2", "-q").exit_code in (0, 1)
    merged = invoke("summary", out, "--json")
    summary = json.loads(merged.stdout)
    assert summary["ok"] == 4
    assert [Path(f["image"]).name for f in summary["failures"]] == [name]
    assert summary["images"] == 5


# --- 7. output safety -----------------------------------------------------------------------------------------


ESCAPING_NAMES = ["..jpg", "...png", "a\\..\\..\\evil.png", "..\\..\\up.png", "\\root.png", ".hidden.png",
                  "-dash.png", "summary.json", "summary.1-of-1.png", "x.json.png"]


def test_names_that_try_to_escape_write_only_inside_out(model, tmp_path):
    sandbox = tmp_path / "sandbox"
    root = sandbox / "in"
    for i, name in enumerate(ESCAPING_NAMES):
        write_png(root / name, seed=i)
    direct = write_png(sandbox / "loose" / "..jpg", seed=99)  # also named on the command line
    out = sandbox / "out"
    before = snapshot(tmp_path, skip=out)
    result = invoke("explain", root, direct, "--model", model, "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert snapshot(tmp_path, skip=out) == before  # nothing outside --out created or changed
    out_real = out.resolve()
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            assert not path.is_symlink()
            assert path.resolve().is_relative_to(out_real)
    records = image_records(out)
    assert set(records) == {str(root / name) for name in ESCAPING_NAMES} | {str(direct)}
    summary = read_json(out / "summary.json")  # not overwritten by the image named summary.json
    assert summary["images"] == summary["ok"] == len(ESCAPING_NAMES) + 1


def test_out_equal_to_the_input_folder_never_touches_the_inputs(model, tmp_path):
    photos = tmp_path / "photos"
    for i in range(3):
        write_png(photos / f"p{i}.png", seed=i)
    write_png(photos / "sub" / "q.png", seed=9)
    (photos / "notes.tmp").write_text("user data\n", "utf-8")
    before = snapshot(photos, skip=None)
    # The folder is explained into itself: outputs land beside the inputs, which stay byte for
    # byte; a second run does not read the first run's overlays back as photos.
    for _ in range(2):
        result = invoke("explain", photos, "--model", model, "--out", photos, "-q")
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
        after = snapshot(photos, skip=None)
        assert all(after[name] == data for name, data in before.items())
        summary = read_json(photos / "summary.json")
        assert (summary["images"], summary["ok"]) == (4, 4)
        assert {"p0.json", "p1.json", "p2.json", "sub/q.json"} <= set(after)


def test_an_output_that_would_replace_an_input_fails_that_image_only(model, tmp_path):
    photos = tmp_path / "photos"
    write_png(photos / "x.png", seed=1)
    for index in range(3):  # an input named like x.png's overlay for any of the 3 classes
        write_png(photos / f"x.gradcam.{index}.png", seed=2 + index)
    before = snapshot(photos, skip=None)
    result = invoke("explain", photos / "x.png", *(photos / f"x.gradcam.{i}.png" for i in range(3)),
                    "--model", model, "--out", photos, "-q")
    assert result.exit_code == 1
    assert "would overwrite an input image; write to another output folder (--out)" in result.stderr
    after = snapshot(photos, skip=None)
    assert all(after[name] == data for name, data in before.items())


def test_out_folder_holding_user_files_keeps_them_byte_for_byte(model, tmp_path):
    photos = tmp_path / "photos"
    write_png(photos / "kept.png", seed=1)
    (photos / "kept.json").write_text('{"mine": true}\n', "utf-8")
    other = tmp_path / "other"
    write_png(other / "new.png", seed=2)
    before = snapshot(photos, skip=None)
    result = invoke("explain", other, "--model", model, "--out", photos, "-q")
    assert result.exit_code == 0, result.stderr
    after = snapshot(photos, skip=None)
    assert all(after[name] == data for name, data in before.items())
    assert "new.json" in after


def test_resume_deletes_only_camcli_temporaries(model, tmp_path):
    photos = tmp_path / "photos"
    (photos / "drafts").mkdir(parents=True)
    (photos / ".notes.tmp").write_text("user data\n", "utf-8")
    (photos / "drafts" / ".session.tmp").write_text("more user data\n", "utf-8")
    other = tmp_path / "other"
    write_png(other / "new.png", seed=2)
    result = invoke("explain", other, "--model", model, "--out", photos, "--resume", "-q")
    assert result.exit_code == 0, result.stderr
    assert (photos / ".notes.tmp").is_file()
    assert (photos / "drafts" / ".session.tmp").is_file()


def test_image_and_folder_whose_outputs_collide_both_succeed(model, tmp_path):
    root = tmp_path / "in"
    write_png(root / "a.png", seed=1)
    write_png(root / "a.json" / "x.png", seed=2)
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", model, "--out", out, "-q")
    assert "Traceback" not in result.stderr
    assert result.exit_code == 0, result.stderr
    assert set(image_records(out)) == {str(root / "a.png"), str(root / "a.json" / "x.png")}


# --- 8. fuzzed files through the CLI ----------------------------------------------------------------------------
# tests/test_images.py already checks load_rgb on random bytes and every Pillow mode; here the same
# kinds of files go through a whole run.


@pytest.fixture(scope="module")
def fuzz_scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.one_of(st.binary(max_size=200), damaged_images()), min_size=1, max_size=4))
def test_fuzzed_files_fail_one_by_one_without_traceback(model, fuzz_scratch, files):
    folder = Path(tempfile.mkdtemp(dir=fuzz_scratch))
    root, out = folder / "in", folder / "out"
    root.mkdir()
    expected_failures = set()
    for i, data in enumerate(files):
        path = root / f"f{i}.{'png' if i % 2 else 'jpg'}"
        path.write_bytes(data)
        try:
            load_rgb(path)
        except ImageLoadError:
            expected_failures.add(str(path))
    result = invoke("explain", root, "--model", model, "--out", out, "-q")
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.exit_code == (1 if expected_failures else 0), result.stderr
    summary = read_json(out / "summary.json")
    assert {f["image"] for f in summary["failures"]} == expected_failures
    assert all(f["error"].strip() for f in summary["failures"])
    assert len(failed_lines(result.stderr)) == len(expected_failures)
    assert set(image_records(out)) == {str(root / f"f{i}.{'png' if i % 2 else 'jpg'}")
                                       for i in range(len(files))} - expected_failures
