"""One description of a run (camcli/options.py): the groups check themselves, every entry point takes them,
the command line cannot drift from them, and the fingerprint is made from their fields."""

import dataclasses
import json
from pathlib import Path

import click
import numpy as np
import pytest
from cli_helpers import invoke, only_line
from PIL import Image

import camcli
from camcli.cli import cli
from camcli.errors import UsageError
from camcli.options import (
    GROUPS,
    AuditOptions,
    FileOptions,
    MapRequest,
    ModelOptions,
    RunHooks,
    RunOptions,
    SanityOptions,
    ScoringOptions,
    field_names,
    fingerprint_fields,
)
from camcli.runs.writer import settings_of

# The command-line options that are no group's field: what the command itself does with its output.
COMMAND_ONLY = {
    "explain": {"quiet", "print_json"},
    "evaluate": {"sanity"},
    "audit": {"quiet", "print_json", "fail_on_flag", "sanity", "fail_under"},
    "layers": {"token_grid"},
}
# The groups each command builds from its options (cli.option_groups).
COMMAND_GROUPS = {
    "explain": (ModelOptions, MapRequest, FileOptions, RunOptions),
    "evaluate": (ModelOptions, MapRequest, FileOptions, RunOptions, ScoringOptions, SanityOptions),
    "audit": (ModelOptions, MapRequest, FileOptions, RunOptions, AuditOptions, SanityOptions),
    "layers": (ModelOptions,),
}


@pytest.fixture(scope="module")
def demo_model():
    return camcli.load_model("demo")


def _fields_by_option_name(groups):
    """{command-line parameter name: (group, field)} for the groups' fields."""
    named = {}
    for group in groups:
        prefix = getattr(group, "cli_prefix", "")
        for item in dataclasses.fields(group):
            named[prefix + item.name] = (group, item)
    return named


@pytest.mark.parametrize("command", sorted(COMMAND_GROUPS))
def test_every_command_line_option_is_a_group_field_with_its_default(command):
    params = [p for p in cli.commands[command].params if isinstance(p, click.Option) and p.expose_value]
    fields = _fields_by_option_name(COMMAND_GROUPS[command])
    strays, wrong_defaults = [], []
    for param in params:
        if param.name in COMMAND_ONLY[command]:
            continue
        if param.name not in fields:
            strays.append(param.name)
            continue
        group, item = fields[param.name]
        if not item.metadata.get("cli", True):
            strays.append(f"{param.name} (library-only in {group.__name__})")
        default = None if param.default is getattr(click.core, "UNSET", None) else param.default
        if param.multiple:
            default = tuple(default or ())
        if param.is_flag and default is None:
            default = False
        expected = None if param.name == "out" and command == "audit" else item.default
        if default != expected:
            wrong_defaults.append((param.name, default, expected))
    assert strays == []
    assert wrong_defaults == []


def test_explain_offers_every_command_line_field_of_its_groups():
    offered = {p.name for p in cli.commands["explain"].params}
    missing = [f"{group.__name__}.{item.name}" for group in COMMAND_GROUPS["explain"]
               for item in dataclasses.fields(group) if item.metadata.get("cli", True) and item.name not in offered]
    assert missing == []


def test_a_library_call_takes_no_field_twice():
    """Keywords are routed by name, so the groups one call takes share no field name."""
    for groups in [(ModelOptions, MapRequest, FileOptions, RunOptions, RunHooks, ScoringOptions),
                   (ModelOptions, MapRequest, FileOptions, RunOptions, RunHooks, AuditOptions),
                   (ModelOptions, MapRequest, RunOptions, SanityOptions)]:
        names = [name for group in groups for name in field_names(group)]
        assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_group_is_frozen_and_made_with_its_defaults():
    for group in GROUPS:
        made = group()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, field_names(group)[0], None)
    assert MapRequest().methods == ("gradcam",) and FileOptions().label_threshold == 0.5


@pytest.mark.parametrize("group, options, message", [
    (MapRequest, {"methods": "gradcam+++"}, "unknown method 'gradcam+++': choose one of gradcam"),
    (MapRequest, {"classes": 5}, "`classes` takes a name or a list of names, not int 5"),
    (MapRequest, {"max_channels": 4},
     "`max_channels` applies to the methods that score channels one by one "
     "(scorecam, sscam, iscam, ablationcam), not gradcam"),
    (MapRequest, {"top_k": 0}, "`top_k=0` must be at least 1"),
    (MapRequest, {"head": "relu"}, "unknown `head` 'relu': choose one of auto, softmax, sigmoid"),
    (MapRequest, {"token_grid": "7by7"}, "`token_grid=7by7` is not HEIGHTxWIDTH"),
    (MapRequest, {"target_mask": "m.png"}, "`target_mask` applies to `target=region`"),
    (FileOptions, {"alpha": 2}, "`alpha=2` must be at most 1"),
    (FileOptions, {"box_threshold": -1}, "`box_threshold=-1` must be at least 0"),
    (FileOptions, {"colormap": "rainbowish"}, "unknown colormap 'rainbowish'"),
    (FileOptions, {"max_size": 8}, "`max_size=8` must be at least 16"),
    (FileOptions, {"overlay_format": "gif"}, "unknown `overlay_format` 'gif'"),
    (FileOptions, {"save_mask": "yes"}, "`save_mask` is true or false, not 'yes'"),
    (RunOptions, {"batch_size": 0}, "`batch_size=0` must be at least 1"),
    (RunOptions, {"batch_size": 2.5}, "`batch_size=2.5` must be a whole number"),
    (RunOptions, {"shard": "0/3"}, "shards are numbered 1 to N"),
    (RunOptions, {"out": 42}, "`out` takes a folder's path, not a int"),
    (ModelOptions, {"model": 42}, "`model` takes a built-in name, a model file, a LoadedModel or a Keras model"),
    (ModelOptions, {"preprocess": "imagenet"}, "unknown `preprocess` 'imagenet'"),
    (RunHooks, {"on_failure": "print"}, "`on_failure` takes a function"),
    (ScoringOptions, {"explain_class": "top1"}, "unknown `explain_class` 'top1'"),
    (AuditOptions, {"by": "truth"}, "`by=truth` needs the images' labels: give `truth_labels`"),
    (AuditOptions, {"neighbours": 1}, "`neighbours=1` must be at least 2"),
    (SanityOptions, {"images": 0}, "`images=0` must be at least 1"),
])
def test_a_group_checks_itself_when_it_is_made(group, options, message):
    with pytest.raises(UsageError) as error:
        group(**options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_string_is_one_item_and_lists_are_kept_in_order():
    request = MapRequest(methods="GradCAM", layers="block5_conv3", classes=["top2", "tabby", 281])
    assert request.methods == ("gradcam",) and request.layers == ("block5_conv3",)
    assert request.classes == ("top2", "tabby", "281")
    assert MapRequest(methods=["cam", "gradcam", "cam"]).methods == ("cam", "gradcam")
    assert RunOptions(shard="2/4").shard == (2, 4) and RunOptions(out="x").out == Path("x")


@pytest.mark.parametrize("call", [camcli.explain_paths, camcli.evaluate_paths, camcli.audit_paths,
                                  camcli.sanity_paths])
def test_an_unknown_keyword_names_the_closest_field(call, tmp_path):
    with pytest.raises(UsageError) as error:
        call([tmp_path], model="demo", save_msk=True)
    assert str(error.value) == f"{call.__name__} takes no option 'save_msk'; did you mean 'save_mask'?" or \
        "takes no option 'save_msk'" in str(error.value)


def test_keywords_replace_the_fields_of_a_group_given_whole(tmp_path):
    from camcli.api import groups_of

    groups = groups_of("explain_paths", ModelOptions("demo"), {"save_mask": True, "batch_size": 2},
                       files=FileOptions(panel=True), run=None)
    assert groups["files"] == FileOptions(panel=True, save_mask=True)
    assert groups["run"].batch_size == 2 and groups["model"].model == "demo"
    with pytest.raises(UsageError, match="`files` takes a camcli.options.FileOptions, not a dict"):
        groups_of("explain_paths", "demo", {}, files={"save_mask": True})


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "`batch_size=0` must be at least 1"),
    ({"alpha": 2}, "`alpha=2` must be at most 1"),
    ({"box_threshold": -1}, "`box_threshold=-1` must be at least 0"),
    ({"refine": "slic"}, "`bg_threshold` and `refine` shape the label maps: add `save_segmentation`"),
    ({"methods": ["gradcam", "nope"]}, "unknown method 'nope'"),
])
def test_explain_paths_refuses_bad_options_before_the_model_loads(options, message, tmp_path, monkeypatch):
    def no_loading(self):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(ModelOptions, "load", no_loading)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(UsageError) as error:
        camcli.explain_paths(tmp_path / "a.png", model="demo", out=tmp_path / "out", **options)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_one_path_as_a_string_is_one_path_and_a_missing_one_is_a_usage_error(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    summary = camcli.explain_paths("a.png", model="demo", out="out")
    assert (summary.images, summary.ok) == (1, 1)
    with pytest.raises(UsageError, match="^b.png does not exist: check the path$"):
        camcli.explain_paths(["a.png", "b.png"], model="demo", out="out")


def test_a_mistyped_path_is_exit_2_before_anything_loads(tmp_path):
    result = invoke("explain", tmp_path / "nope.jpg", "--model", "demo", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result) == f"camcli: error: {tmp_path / 'nope.jpg'} does not exist: check the path"
    assert not (tmp_path / "out").exists()


# --- the fingerprint is made from the groups ------------------------------------------------------------


def _another_value(group, item):
    """A valid value of the field other than its default."""
    others = {"colormap": "viridis", "overlay_format": "webp", "refine": "slic", "max_size": 64,
              "bg_threshold": 0.3, "alpha": 0.25, "box_threshold": 0.4, "png_compress_level": 6,
              "methods": ("cam",), "layers": ("conv5",), "classes": ("top2",), "top_k": 2, "head": "sigmoid",
              "token_grid": "4x4", "max_channels": 3, "precision": "bfloat16", "min_score": 0.7, "box_overlap": 0.5,
              "compare_with": ("1",)}
    if item.name in others:
        return others[item.name]
    if isinstance(item.default, bool):
        return not item.default
    raise AssertionError(f"no other value for {group.__name__}.{item.name}: add one here")


@pytest.mark.parametrize("group", [FileOptions, MapRequest])
def test_every_field_that_shapes_the_outputs_changes_the_fingerprint(group):
    """A new field enters the fingerprint without anyone adding it: only those marked otherwise stay out."""
    base = group()
    digest = settings_of if group is FileOptions else fingerprint_fields
    unchanged = []
    for item in dataclasses.fields(group):
        if not item.metadata.get("fingerprint", True):
            continue
        value = _another_value(group, item)
        changes = {item.name: value}
        if item.name in ("bg_threshold", "refine"):
            changes["save_segmentation"] = True
        if item.name == "max_channels":
            changes["methods"] = ("scorecam",)
        if item.name == "compare_with":
            changes["methods"] = ("finercam",)
        if item.name in ("min_score", "box_overlap"):
            changes["target"] = "box"
        if digest(dataclasses.replace(base, **changes)) == digest(dataclasses.replace(
                base, **{k: v for k, v in changes.items() if k != item.name})):
            unchanged.append(item.name)
    assert unchanged == []


def test_a_changed_file_option_recomputes_on_resume_and_the_same_one_skips(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    first = camcli.explain_paths([tmp_path / "0.png", tmp_path / "1.png"], model="demo", out=out)
    same = camcli.explain_paths([tmp_path / "0.png", tmp_path / "1.png"], model="demo", out=out, resume=True)
    other = camcli.explain_paths([tmp_path / "0.png", tmp_path / "1.png"], model="demo", out=out, resume=True,
                                 colormap="viridis")
    assert (first.explained, same.skipped, other.recomputed) == (2, 2, 2)
    fingerprints = {json.loads((out / "0.json").read_text())["fingerprint"], first.run["fingerprint"]}
    assert len(fingerprints) == 2  # the record now holds the viridis run's


def test_a_method_set_builds_one_compiled_step(demo_model):
    from camcli.explain.explainer import MethodSet

    methods = MethodSet.of(demo_model, methods=["gradcam", "gradcam++", "scorecam"], max_channels=4)
    assert methods.steps_built == 1
    assert [e.options.max_channels for e in methods.explainers] == [None, None, 4]
    batch = methods.preprocess([np.zeros((96, 96, 3), np.uint8)])
    methods.explain_batch(batch)
    assert methods.steps_run == 1


def test_explainer_takes_one_method_and_points_to_method_set(demo_model):
    with pytest.raises(UsageError, match=r"an Explainer runs one method, not gradcam, cam: .*MethodSet.of"):
        camcli.Explainer(demo_model, methods=["gradcam", "cam"])
