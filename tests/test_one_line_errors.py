"""Every way the issue found to end in stack frames now ends in one line and an exit status, through
CliRunner and through a real process: models camcli cannot explain yet, a corrupt or foreign
summary.json, a class written in non-ASCII digits, --debug where the hint puts it, and `camcli
layers` for every built-in name."""

import json
import subprocess
import sys

import keras
import pytest
from cli_helpers import invoke, only_line
from click.testing import CliRunner
from PIL import Image

from camcli.cli import cli
from camcli.models import catalog


@pytest.fixture(scope="module")
def scene(scenes):
    return scenes[0]


def _two_inputs():
    a, b = keras.Input((16, 16, 3), name="rgb"), keras.Input((16, 16, 1), name="depth")
    y = keras.layers.Concatenate()([a, b])
    y = keras.layers.Conv2D(4, 3, name="conv")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(y), name="two_inputs")


def _segmentation():
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    return keras.Model(x, keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(y), name="segmenter")


def _two_outputs():
    x = keras.Input((16, 16, 3))
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(x))
    return keras.Model(x, [keras.layers.Dense(3, name="a")(y), keras.layers.Dense(2, name="b")(y)], name="two_heads")


@pytest.mark.parametrize("build, message, layers_ok", [
    (_two_inputs, "model {path} has 2 inputs (rgb: (batch, 16, 16, 3), depth: (batch, 16, 16, 1)); name the image "
                  "input with --input NAME and give the others with --extra-inputs", False),
    (_segmentation, "model {path} outputs (batch, 16, 16, 3), a score per pixel: explain a region of it with "
                    "--target region", True),
    (_two_outputs, "model {path} has 2 outputs (a: (batch, 3), b: (batch, 2)); choose the one to explain with "
                   "--output NAME", False),
], ids=["two-inputs", "segmentation", "two-outputs"])
def test_models_that_need_more_options_get_one_line_up_front(build, message, layers_ok, scene, tmp_path):
    path = tmp_path / f"{build.__name__}.keras"
    build().save(path)
    out = tmp_path / "out"
    result = invoke("explain", scene, "--model", path, "--out", out)
    assert result.exit_code == 2
    assert only_line(result) == "camcli: error: " + message.format(path=path)
    assert not out.exists()  # refused before anything was written
    layers = invoke("layers", "--model", path)
    if layers_ok:  # its layers do not depend on the target
        assert layers.exit_code == 0 and "conv" in layers.stdout
    else:
        assert layers.exit_code == 2 and only_line(layers) == "camcli: error: " + message.format(path=path)


@pytest.mark.parametrize("content, reason", [
    (b'{"images": 3, "ok": ', "it is not a JSON object (corrupt, or not camcli's)"),
    (b"\xff\xfe not even text", "it is not a JSON object (corrupt, or not camcli's)"),
    (b'["a", "list"]', "it is not a JSON object (corrupt, or not camcli's)"),
    (b'{"title": "my summary"}', "it lacks camcli's fields (images, ok, failed, failures)"),
], ids=["truncated", "binary", "list", "foreign"])
def test_a_corrupt_or_foreign_summary_is_one_line(content, reason, tmp_path):
    (tmp_path / "summary.json").write_bytes(content)
    expected = (f"camcli: error: {tmp_path / 'summary.json'} is not a camcli run summary: {reason}; remove it, or "
                "use another output folder")
    result = invoke("summary", tmp_path)
    assert result.exit_code == 2 and only_line(result) == expected
    report = invoke("report", tmp_path)  # the report notes it and says there is nothing to show
    assert report.exit_code == 2 and "Traceback" not in report.stderr


def test_a_class_in_non_ascii_digits_is_an_unknown_class(scene, tmp_path):
    for text in ("²", "٣", "①"):
        result = invoke("explain", scene, "--model", "demo", "--out", tmp_path / "out", "--class", text)
        assert result.exit_code == 2, result.stderr
        assert only_line(result).startswith(f"camcli: error: unknown class {text!r}")


def test_debug_is_accepted_after_the_command_as_the_hint_says(tmp_path):
    (tmp_path / "summary.json").write_text("[]", "utf-8")
    for args in (["--debug", "summary", tmp_path], ["summary", tmp_path, "--debug"]):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code != 2 or "no such option" not in result.output
        assert type(result.exception).__name__ == "CorruptSummaryError"  # the real exception, with its traceback


@pytest.mark.slow
def test_the_internal_error_hint_works_in_a_real_process(tmp_path):
    """`--debug` after the command is accepted by the real entry point too."""
    result = subprocess.run([sys.executable, "-m", "camcli", "summary", str(tmp_path), "--debug"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "MissingSummaryError" in result.stderr  # the traceback, as asked; status kept
    plain = subprocess.run([sys.executable, "-m", "camcli", "summary", str(tmp_path)], capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stderr.strip() == (f"camcli: error: no run summary at {tmp_path / 'summary.json'}: is it an output "
                                    "folder of `camcli explain`?")


_built = {}


@pytest.mark.parametrize("name", [
    *catalog.DEMO_NAMES,
    *(pytest.param(name, marks=pytest.mark.slow) for name in sorted(catalog.BUILTIN_MODELS)),  # real-size models
])
def test_layers_works_for_every_builtin_name(name, monkeypatch):
    """`camcli layers --model NAME` for each built-in: demo models keep their own weights (the bug was
    a request to drop a --weights never given), ImageNet ones are built with random weights."""
    from camcli.models import loading

    real_builtin = loading.load_builtin
    asked = {}

    def load_builtin(entry, weights):  # each big model is built once per session (see test_builtin_models)
        asked["weights"] = weights
        if entry.name not in _built:
            _built[entry.name] = real_builtin(entry, weights)
        return _built[entry.name]

    monkeypatch.setattr(loading, "load_builtin", load_builtin)
    result = invoke("layers", "--model", name)
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()
    default = [row.split()[1] for row in rows if row.startswith("*")]
    entry = catalog.lookup(name)
    assert default == [entry.default_layer]
    assert asked.get("weights") == (None if name in catalog.DEMO_NAMES else "none")


@pytest.mark.slow
def test_layers_of_demo_cheat_through_a_real_process():
    result = subprocess.run([sys.executable, "-m", "camcli", "layers", "--model", "demo-cheat"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "* conv6" in result.stdout


def test_the_summary_json_is_readable_after_a_run(scene, tmp_path):
    out = tmp_path / "out"
    assert invoke("explain", scene, "--model", "demo", "--out", out, "-q").exit_code == 0
    merged = invoke("summary", out, "--json")
    assert merged.exit_code == 0 and json.loads(merged.stdout)["ok"] == 1
    Image.open(next(out.glob("*.gradcam.*.png"))).verify()
