"""Atomic writes: a result file is either absent, the old one, or complete; never half-written."""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from camcli.runs.files import is_complete, save_json, save_npy, save_png, write_bytes_atomic


def test_save_json_writes_utf8_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "new" / "dir" / "cat.json"
    obj = {
        "image": "été.jpg",
        "score": np.float32(0.5),
        "index": np.int64(281),
        "peak": np.array([3, 4]),
        "ok": np.bool_(True),
        "path": tmp_path / "x.png",
    }
    save_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert "été.jpg" in text and text.endswith("\n")
    assert json.loads(text) == {
        "image": "été.jpg", "score": 0.5, "index": 281, "peak": [3, 4], "ok": True,
        "path": str(tmp_path / "x.png"),
    }
    assert sorted(os.listdir(path.parent)) == ["cat.json"]


def test_save_json_refuses_nan_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.json"
    with pytest.raises(ValueError):
        save_json(path, {"score": np.float32("nan")})
    assert os.listdir(tmp_path) == []


def test_save_json_refuses_unknown_types(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_json(tmp_path / "bad.json", {"x": object()})


def test_save_json_keeps_undecodable_file_names_valid(tmp_path):
    path = tmp_path / "raw.json"
    save_json(path, {"image": os.fsdecode(b"caf\xe9.jpg")})
    assert json.loads(path.read_bytes().decode("utf-8"))["image"] == "caf\udce9.jpg"


def test_failed_replace_leaves_no_temp_and_no_target(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        save_json(tmp_path / "cat.json", {"a": 1})
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "cat.json"
    save_json(path, {"run": 1})

    def interrupted(src, dst):
        raise KeyboardInterrupt  # even an interrupt mid-write cleans up

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_json(path, {"run": 2})
    assert json.loads(path.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["cat.json"]


def test_written_files_get_umask_permissions_not_mkstemp_0600(tmp_path):
    path = tmp_path / "x.bin"
    write_bytes_atomic(path, b"abc")
    assert path.read_bytes() == b"abc"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_long_names_still_get_a_temporary_name(tmp_path):
    path = tmp_path / ("x" * 240 + ".png")
    write_bytes_atomic(path, b"data")
    assert path.read_bytes() == b"data"


def test_save_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "a" / "cat.gradcam.281.png"
    save_png(path, rgb)
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), rgb)


@pytest.mark.parametrize("shape", [(7, 5, 3), (7, 5), (1, 1, 3), (1, 9), (300, 451, 3)])
def test_png_writer_round_trips_through_pillow_with_valid_checksums_and_the_marker(tmp_path, shape):
    from camcli.runs.files import encode_png
    from camcli.runs.layout import is_camcli_png

    pixels = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    pixels[..., : shape[1] // 2] = 200  # flat areas as well as noise
    path = tmp_path / "a.png"
    path.write_bytes(encode_png(pixels))
    with Image.open(path) as im:
        im.verify()  # every chunk's CRC, and the chunk layout
    with Image.open(path) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB" if len(shape) == 3 else "L", (shape[1], shape[0]))
        assert im.info["Software"] == "camcli"
        np.testing.assert_array_equal(np.asarray(im), pixels)
    assert is_camcli_png(path)


@pytest.mark.parametrize("shape", [(4, 4, 4), (4, 4, 1), (0, 4, 3), (4,)])
def test_png_writer_refuses_other_shapes(shape):
    from camcli.runs.files import encode_png

    with pytest.raises(ValueError, match=r"expected a non-empty \(H, W\) or \(H, W, 3\) image"):
        encode_png(np.zeros(shape, np.uint8))


def test_save_npy_round_trip(tmp_path):
    heat = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "cat.gradcam.281.npy"
    save_npy(path, heat)
    np.testing.assert_array_equal(np.load(path), heat)


def test_is_complete(tmp_path):
    assert not is_complete(tmp_path / "missing.json")
    assert not is_complete(tmp_path)  # a directory
    (tmp_path / "empty.json").write_bytes(b"")
    assert not is_complete(tmp_path / "empty.json")
    (tmp_path / "done.json").write_bytes(b"{}")
    assert is_complete(tmp_path / "done.json")
