"""Issue 28's rerun of the bad inputs, the cases tests/test_bad_inputs.py did not hold: odd files (a folder
given as the model, an image given as the truth, JSON nested past Python's recursion limit, a symbolic
link loop as --out), options a run silently ignored (evaluate's --steps with masks, evaluate_paths'
report, resume, shard and file options, the callback's file options), and library keywords of the
wrong kind that raised TypeError, ValueError or AttributeError from deep inside. Each is one line and
an exit status on the command line, one camcli.errors exception from the library."""

import os

import numpy as np
import pytest
from cli_helpers import invoke, only_line

from camcli.errors import CamcliError, UsageError

DEEP = "[" * 5000 + "]" * 5000  # past Python's recursion limit: json.loads raised RecursionError


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """The six scenes, three masked scenes, model files (one input, two inputs, one sigmoid unit) and the
    odd tables and paths the cases below need."""
    import tiny_models

    from camcli.models.demo.samples import write_generated, write_segmentation_samples

    root = tmp_path_factory.mktemp("odd")
    write_generated(root / "scenes")
    write_segmentation_samples(root / "masked", count=3, seed=5)
    tiny_models.two_inputs().save(root / "two.keras")
    tiny_models.vit().save(root / "one.keras")  # one input, named "image"
    tiny_models.gap_dense(classes=1, activation="sigmoid", name="binary").save(root / "binary.keras")
    tables = {"deep.json": DEEP,
              "extra_deep.json": '{"circle_1.png": {"meta": ' + DEEP + "}}",
              "extra_deep.csv": f'image,meta\ncircle_1.png,"{DEEP}"\n',
              "extra_columns.csv": "image,meta,meta\ncircle_1.png,1 2,3 4\n",
              "labels_negative.csv": "-1,circle\n2,square\n3,triangle\n",
              "labels_fraction.csv": "1.5,circle\n",
              "truth_labels_unknown.csv": "image,label\ncircle_1.png,elephant\nsquare_1.png,square\n",
              "truth_labels_index.csv": "image,label\ncircle_1.png,99\n",
              "truth_labels_twice.csv": "image,label\ncircle_1.png,circle\ncircle_1.png,square\n"}
    for name, text in tables.items():
        (root / name).write_text(text)
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    return root


IMAGE = "{T}/scenes/circle_1.png"
TWO = ["--model", "{T}/two.keras", "--input", "image", "--preprocess", "none"]
EVALUATE_MASKS = ["evaluate", "{T}/masked/images", "--truth-masks", "{T}/masked/masks", "--model", "demo"]
MASKS_ONLY = ("applies to boxes (--truth); with --truth-masks the label maps are scored by IoU, for each image's mask "
              "classes: drop it")
JSON_HELP = ('write {"image.jpg": [{"box": [x0, y0, x1, y1], "label": "cat"}]} or [{"image": "image.jpg", "box": '
             '[x0, y0, x1, y1], "label": "cat"}]')

CLI_CASES = [
    # model files and their inputs, outputs and layers
    ("model-is-a-folder", ["explain", IMAGE, "--model", "{T}/scenes"], 2,
     "model {T}/scenes is a folder, not a .keras or .h5 file; a KerasHub preset folder is given as hub:{T}/scenes"),
    ("input-is-no-image", ["explain", IMAGE, "--model", "{T}/two.keras", "--input", "meta", "--preprocess", "none"], 2,
     "input 'meta' of model {T}/two.keras is no image, (batch, height, width, 3): name the image input with --input "
     "(its inputs are image: (batch, 8, 8, 3), meta: (batch, 2))"),
    ("layer-is-the-input", ["explain", IMAGE, "--model", "{T}/one.keras", "--preprocess", "none", "--layer",
                            "image"], 2,
     "'image' is the input of model 'vit', not a layer with activations to explain (see `camcli layers --model ...`)"),
    ("softmax-on-one-unit", ["explain", IMAGE, "--model", "{T}/binary.keras", "--preprocess", "none", "--head",
                             "softmax"], 2,
     "--head softmax reads 1 class(es) from model {T}/binary.keras's output, and its labels name 2: leave --head at "
     "auto"),
    # output folders
    ("out-is-a-link-loop", ["explain", IMAGE, "--model", "demo", "--out", "{T}/loop_a"], 2,
     "cannot create output folder {T}/loop_a: {T}/loop_a is a symbolic link that leads nowhere (a loop, or a "
     "missing target)"),
    # truth files
    ("truth-nests-too-deeply", ["evaluate", "{T}/scenes", "--truth", "{T}/deep.json", "--model", "demo"], 2,
     "{T}/deep.json: its lists and objects nest too deeply to be boxes; " + JSON_HELP),
    ("truth-is-an-image", ["evaluate", "{T}/scenes", "--truth", IMAGE, "--model", "demo"], 2,
     IMAGE + " is an image, not a truth file; give a .csv, a .json or a folder of VOC .xml files that hold the boxes"),
    # extra-inputs tables
    ("extra-json-nests-too-deeply", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_deep.json"], 2,
     "{T}/extra_deep.json: its lists and objects nest too deeply; give {image path: {input name: values}}"),
    ("extra-cell-nests-too-deeply", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_deep.csv"], 2,
     "{T}/extra_deep.csv, line 2, column meta: '" + "[" * 37 + "...' is not a number, numbers separated by spaces, "
     "or a JSON list"),
    ("extra-column-twice", ["explain", IMAGE, *TWO, "--extra-inputs", "{T}/extra_columns.csv"], 2,
     "{T}/extra_columns.csv: its header names column 'meta' twice; keep one column per input"),
    # audit by truth: labels the model does not have (they were "unknown class" and "`classes=99`", with no
    # word of the file), and two labels for one image (the second won)
    ("audit-label-unknown", ["audit", "{T}/scenes", "--model", "demo", "--by", "truth", "--truth-labels",
                             "{T}/truth_labels_unknown.csv"], 2,
     "{T}/truth_labels_unknown.csv: label 'elephant' is no class of model demo (circle, square, triangle, star, "
     "cross, ring); give each image a class name or index of the model"),
    ("audit-label-index", ["audit", "{T}/scenes", "--model", "demo", "--by", "truth", "--truth-labels",
                           "{T}/truth_labels_index.csv"], 2,
     "{T}/truth_labels_index.csv: label '99' is no class of model demo (circle, square, triangle, star, cross, "
     "ring); give each image a class name or index of the model"),
    ("audit-label-twice", ["audit", "{T}/scenes", "--model", "demo", "--truth-labels",
                           "{T}/truth_labels_twice.csv"], 2,
     "{T}/truth_labels_twice.csv, line 3: a second label for 'circle_1.png' ('square', and 'circle' before); keep "
     "one row per image"),
    # evaluate with masks: mask labels that are numbers but no pixel values, and the box options it ignored
    ("mask-label-negative", [*EVALUATE_MASKS, "--mask-labels", "{T}/labels_negative.csv"], 2,
     "{T}/labels_negative.csv, line 1: '-1' is not a pixel value (0..255)"),
    ("mask-label-fraction", [*EVALUATE_MASKS, "--mask-labels", "{T}/labels_fraction.csv"], 2,
     "{T}/labels_fraction.csv, line 1: '1.5' is not a pixel value (0..255)"),
    ("masks-steps", [*EVALUATE_MASKS, "--steps", "10"], 2, "--steps " + MASKS_ONLY),
    ("masks-pointing-tolerance", [*EVALUATE_MASKS, "--pointing-tolerance", "3"], 2,
     "--pointing-tolerance " + MASKS_ONLY),
    ("masks-explain-class", [*EVALUATE_MASKS, "--explain-class", "truth"], 2, "--explain-class " + MASKS_ONLY),
]


@pytest.mark.parametrize("args, code, message", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_a_bad_input_is_one_line_and_an_exit_status(odd, tmp_path, args, code, message):
    out = tmp_path / "out"
    given = [arg.replace("{T}", str(odd)) for arg in args]
    result = invoke(*given, *([] if "--out" in given else ["--out", out]))
    assert result.exit_code == code, result.stderr
    assert only_line(result) == "camcli: error: " + message.replace("{T}", str(odd))
    assert not out.exists()  # nothing written


def test_an_empty_out_is_a_usage_error_not_the_working_folder(odd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" was read as ".": the overlays, records and summary.json landed here
    result = invoke("explain", odd / "scenes" / "circle_1.png", "--model", "demo", "--out", "")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == (
        "Error: Invalid value for '--out': an empty path names no folder; give the output folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, flag, names", [
    (["evaluate", "{T}/scenes", "--truth", "", "--model", "demo"], "--truth", "file or folder"),  # read "."
    (["evaluate", "{T}/masked/images", "--truth-masks", "", "--model", "demo"], "--truth-masks", "folder"),
    (["evaluate", "{T}/masked/images", "--truth-masks", "{T}/masked/masks", "--mask-labels", "", "--model", "demo"],
     "--mask-labels", "file"),
    (["explain", IMAGE, *TWO, "--extra-inputs", ""], "--extra-inputs", "file"),
    (["audit", "{T}/scenes", "--model", "demo", "--truth-labels", ""], "--truth-labels", "file"),
], ids=["truth", "truth-masks", "mask-labels", "extra-inputs", "truth-labels"])
def test_an_empty_file_option_is_a_usage_error_not_the_working_folder(odd, tmp_path, args, flag, names):
    result = invoke(*(arg.replace("{T}", str(odd)) for arg in args), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == f"Error: Invalid value for '{flag}': an empty path names no {names}"


def test_an_empty_weights_file_is_one_line(odd, tmp_path):
    result = invoke("explain", IMAGE.replace("{T}", str(odd)), "--model", "mobilenet", "--weights", "", "--out",
                    tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result) == "camcli: error: --weights is empty: give a name or a path, or leave it out"


@pytest.mark.slow
def test_audit_and_evaluate_with_sanity_still_take_their_own_run_options(odd, tmp_path):
    """The sanity check refuses run options it ignores; the commands give it only its own."""
    pytest.importorskip("scipy")
    out = tmp_path / "audit"
    result = invoke("audit", odd / "scenes", "--model", "demo", "--report", "--sanity", "--sanity-images", "2",
                    "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert (out / "sanity.json").is_file() and (out / "index.html").is_file()


# --- the library: keywords of the wrong kind --------------------------------------------------------------


def _two_input_explainer():
    import tiny_models

    import camcli

    return camcli.Explainer(camcli.wrap_model(tiny_models.two_inputs(), image_input="image",
                                              extra_inputs=lambda key: {"meta": np.zeros(2)}))


def _explain_two(extras):
    return _two_input_explainer().explain([np.zeros((8, 8, 3), np.uint8)], extras=extras)


def first_score(outputs):
    return outputs[0, 0]  # one number for the whole batch


def no_score(outputs):
    return 1 / 0


def _explain_demo(target, method="gradcam"):
    camcli = _camcli()
    return camcli.Explainer(camcli.load_model("demo"), method=method, target=target).explain(
        [np.zeros((8, 8, 3), np.uint8)])


def _camcli():
    import camcli

    return camcli


def _gap():
    import tiny_models

    return tiny_models.gap_dense()


def _unbuilt():
    import keras

    return keras.Sequential([keras.layers.Dense(2)], name="unbuilt")  # no input yet


def _callback(**options):
    from camcli.keras import ExplainCallback

    arguments = {"images": np.zeros((2, 8, 8, 3), np.uint8), **options}
    return ExplainCallback(arguments.pop("images"), **arguments)


def _evaluate(odd, **options):
    given = {"truth": str(odd / "scenes" / "truth.csv"), "out": None, **options}
    return _camcli().evaluate_paths([str(odd / "scenes")], model="demo", **given)


NOT_EVALUATED = ("does not apply to evaluate, which writes evaluation.json and evaluation.csv from one whole run; "
                 "drop it")
GRID = "is not (height, width) in whole numbers, e.g. (14, 14), or '14x14'"
DEPTHS = "`depths` takes a number of checkpoints or a list of layer counts (whole numbers), not "
LIBRARY_CASES = [
    # option groups
    ("token-grid-three", lambda odd: _camcli().explain_paths(["x"], token_grid=(1, 2, 3)),
     "`token_grid=(1, 2, 3)` " + GRID),
    ("token-grid-text", lambda odd: _camcli().explain_paths(["x"], token_grid=("a", "b")),
     "`token_grid=('a', 'b')` " + GRID),
    ("shard-fraction", lambda odd: _camcli().explain_paths(["x"], shard=(1.5, 2)),
     "shard (1.5, 2) is not K/N, e.g. 1/4"),
    ("out-empty", lambda odd: _camcli().explain_paths(["x"], out=""),
     "`out=''` names no folder: give the output folder's path"),
    ("out-nul", lambda odd: _camcli().explain_paths(["x"], out="a\0b"),
     "`out='a\\x00b'` names no folder: give the output folder's path"),
    ("audit-method-list", lambda odd: _camcli().audit_paths(["x"], method=["gradcam"]),
     "`method` takes one method's name, not list ['gradcam']"),
    ("depths-text", lambda odd: _camcli().sanity_paths(["x"], depths="abc"), DEPTHS + "'abc'"),
    ("depths-fraction", lambda odd: _camcli().sanity_paths(["x"], depths=2.5), DEPTHS + "2.5"),
    # a keyword of another call's group names that group, not the closest spelling of this call's fields
    ("explain-steps", lambda odd: _camcli().explain_paths(["x"], steps=5),
     "explain_paths takes no option 'steps': it is a field of ScoringOptions, which explain_paths does not take"),
    ("audit-fail-under", lambda odd: _camcli().audit_paths(["x"], fail_under=["sanity=0.5"]),
     "audit_paths takes no option 'fail_under': it is a field of ScoringOptions and SanityOptions, which audit_paths "
     "does not take"),
    ("layers-out", lambda odd: _camcli().list_layers("demo", out="x"),
     "list_layers takes no option 'out': it is a field of RunOptions, which list_layers does not take"),
    # options evaluate and the sanity check would have ignored
    ("evaluate-report", lambda odd: _evaluate(odd, report=True), "`report` " + NOT_EVALUATED),
    ("evaluate-resume", lambda odd: _evaluate(odd, resume=True), "`resume` " + NOT_EVALUATED),
    ("evaluate-shard", lambda odd: _evaluate(odd, shard="1/2"), "`shard` " + NOT_EVALUATED),
    ("evaluate-save-mask", lambda odd: _evaluate(odd, save_mask=True), "`save_mask` " + NOT_EVALUATED),
    ("evaluate-save-segmentation", lambda odd: _evaluate(odd, save_segmentation=True),
     "`save_segmentation` " + NOT_EVALUATED),
    ("evaluate-masks-steps", lambda odd: _evaluate(odd, truth=None, truth_masks=str(odd / "masked" / "masks"),
                                                   steps=10),
     "`steps` applies to boxes (`truth`); with `truth_masks` the label maps are scored by IoU, for each image's mask "
     "classes: drop it"),
    ("sanity-report", lambda odd: _camcli().sanity_paths([str(odd / "scenes")], model="demo", report=True),
     "`report` does not apply to the sanity check, which writes sanity.json from one whole run; drop it"),
    ("truth-empty", lambda odd: _evaluate(odd, truth=""),  # read as the working folder
     "`truth` is empty: give a name or a path, or leave it out"),
    ("report-number", lambda odd: _camcli().write_report(5), "write_report takes an output folder's path, not int 5"),
    ("merge-number", lambda odd: _camcli().merge_summaries(5),
     "merge_summaries takes an output folder's path, not int 5"),
    ("merge-write-text", lambda odd: _camcli().merge_summaries(odd, write="no"), "`write` is true or false, not 'no'"),
    # models, labels, images
    ("loaded-model-and-preprocess", lambda odd: _camcli().explain_paths(  # was ignored
        [str(odd / "scenes")], model=_camcli().load_model("demo"), preprocess="scale01", out=str(odd / "never")),
     "`preprocess` goes to camcli.wrap_model or load_model, with the model"),
    ("wrap-unbuilt", lambda odd: _camcli().wrap_model(_unbuilt()),
     "model unbuilt is not built: it has no inputs yet; make it from keras.Input(...), or call it on a batch of "
     "images first"),
    ("load-model-number", lambda odd: _camcli().load_model(5),
     "load_model takes a built-in name, a model file or hub:PRESET, not int 5; camcli.wrap_model wraps a Keras model"),
    ("wrap-a-name", lambda odd: _camcli().wrap_model("demo"),
     "wrap_model takes a Keras model, not str 'demo'; camcli.load_model loads a built-in name or a model file"),
    ("wrap-extra-inputs-number", lambda odd: _camcli().wrap_model(_gap(), extra_inputs=5),
     "`extra_inputs` takes a CSV or JSON table's path, or a function of the image's key, not int 5"),
    ("labels-one-string", lambda odd: _camcli().Explainer(_gap(), labels="abc"),  # three classes: read as a, b, c
     "`labels` takes a list of class names, one per class, not str 'abc'"),
    ("labels-dict", lambda odd: _camcli().Explainer(_gap(), labels={"a": 1}),
     "`labels` takes a list of class names, one per class, not dict {'a': 1}"),
    ("build-step-text", lambda odd: _camcli().Explainer(_gap(), build_step="no"),
     "`build_step` is true or false, not 'no'"),
    ("load-rgb-number", lambda odd: _camcli().load_rgb(5),  # read file descriptor 5
     "load_rgb takes an image file's path, not int 5"),
    ("load-rgb-max-pixels", lambda odd: _camcli().load_rgb(str(odd / "scenes" / "circle_1.png"), max_pixels=-1),
     "`max_pixels=-1` must be a whole number, at least 1"),  # was a decompression bomb "over the limit of -1"
    ("overlay-map-text", lambda odd: _camcli().overlay(np.zeros((8, 8, 3), np.uint8), "abc"),  # ValueError
     "`class_map` must be a ClassMap or a 2-D map in [0, 1], not str 'abc'"),
    ("overlay-map-nan", lambda odd: _camcli().overlay(np.zeros((8, 8, 3), np.uint8), np.full((4, 4), np.nan)),
     "`class_map` holds NaN or infinite values; give a 2-D map in [0, 1]"),  # a RuntimeWarning, then a picture
    # a target function that fails while TensorFlow traces the step: its message held "in user code:" and frames
    ("target-shape", lambda odd: _explain_demo(first_score),
     "the target first_score returned shape (); return one score per image, (batch,)"),
    ("target-shape-guided", lambda odd: _explain_demo(first_score, "guidedbackprop"),
     "the target first_score returned shape (); return one score per image, (batch,)"),
    ("target-raises", lambda odd: _explain_demo(no_score),
     "the target no_score failed on the model's output: ZeroDivisionError: division by zero"),
    # a model's other inputs, given to explain
    ("extras-shape", lambda odd: _explain_two({"meta": np.zeros((1, 5))}),
     "extra input 'meta' is shaped (5,) per image, and the model's input takes (2,)"),
    ("extras-text", lambda odd: _explain_two({"meta": "ab"}),
     "extra input 'meta' holds something other than numbers: 'ab'"),
    ("extras-list", lambda odd: _explain_two([1, 2]),
     "`extras` is {input name: array with one row per image}, not list"),
    ("extras-misspelt", lambda odd: _explain_two({"mta": np.zeros((1, 2))}),
     "model two_inputs also takes meta (it has no input 'mta'); pass `extras` ({input name: array with one row per "
     "image})"),
    # the Keras callback
    ("callback-no-images", lambda odd: _callback(images=None),
     "give a list of probe images, or one (n, height, width, 3) array, not NoneType None"),
    ("callback-boxes-text", lambda odd: _callback(boxes="abc"),
     "`boxes` takes one box (x0, y0, x1, y1), or a list of them, per probe image, not str 'abc'"),
    ("callback-bounds-list", lambda odd: _callback(warn_below=[0.5]),
     "`warn_below` takes {metric: bound}, e.g. {'pointing': 0.6}, not list [0.5]"),
    ("callback-preprocess", lambda odd: _callback(preprocess="scale"),  # refused once training had begun
     "unknown `preprocess` 'scale': choose one of caffe, tf, torch, scale01, none"),
    ("callback-labels-text", lambda odd: _callback(labels="abc"), "`labels` takes a list of class names, one per "
                                                                    "class, not str 'abc'"),
    ("callback-truth-labels-text", lambda odd: _callback(truth_labels="ab"),  # two images: labels 'a' and 'b'
     "`truth_labels` takes one label (a class name or index) per probe image, not str 'ab'"),
    ("callback-save-mask", lambda odd: _callback(save_mask=True),
     "`save_mask` does not apply to the callback, which logs overlays to TensorBoard and writes no files; drop it"),
]


@pytest.mark.parametrize("call, message", [case[1:] for case in LIBRARY_CASES], ids=[case[0] for case in LIBRARY_CASES])
def test_a_bad_library_call_raises_one_line(odd, call, message):
    with pytest.raises(CamcliError) as raised:
        call(odd)
    assert isinstance(raised.value, UsageError)
    assert str(raised.value) == message and "\n" not in str(raised.value)


def test_a_target_that_returns_no_score_per_image_fails_in_one_line(odd, tmp_path):
    """The UsageError raised inside the compiled step carried TensorFlow's frames ("in user code: File ...")."""
    summary = _camcli().explain_paths([str(odd / "scenes" / "circle_1.png")], model="demo", out=tmp_path / "out",
                                      target=first_score)
    assert [failure["error"] for failure in summary.failures] == [
        "the target first_score returned shape (); return one score per image, (batch,)"]
    summary = _camcli().explain_paths([str(odd / "scenes" / "circle_1.png")], model="demo", out=tmp_path / "raises",
                                      target=no_score)  # was "internal error while explaining: StagingError"
    assert [failure["error"] for failure in summary.failures] == [
        "the target no_score failed on the model's output: ZeroDivisionError: division by zero"]


def test_extra_inputs_that_are_not_numbers_fail_the_image_in_one_line(odd, tmp_path):
    """A callable's text values were an "internal error while decoding: ValueError"."""
    import tiny_models

    camcli = _camcli()
    model = camcli.wrap_model(tiny_models.two_inputs(), image_input="image", extra_inputs=lambda key: {"meta": "ab"})
    image = odd / "scenes" / "circle_1.png"
    summary = camcli.explain_paths([str(image)], model=model, out=tmp_path / "out")
    assert [failure["error"] for failure in summary.failures] == [
        f"input 'meta' of {image} holds something other than numbers: 'ab'"]
    fails = camcli.wrap_model(tiny_models.two_inputs(), image_input="image", extra_inputs=lambda key: 1 / 0)
    summary = camcli.explain_paths([str(image)], model=fails, out=tmp_path / "fails")  # was an "internal error"
    assert [failure["error"] for failure in summary.failures] == [
        f"`extra_inputs` failed for {image}: ZeroDivisionError: division by zero"]
    returns_none = camcli.wrap_model(tiny_models.two_inputs(), image_input="image", extra_inputs=lambda key: None)
    summary = camcli.explain_paths([str(image)], model=returns_none, out=tmp_path / "none")
    assert [failure["error"] for failure in summary.failures] == [
        f"`extra_inputs` returned NoneType for {image}; return {{input name: values}}"]


@pytest.mark.slow
@pytest.mark.parametrize("options, message", [
    ({"num_gpus": "1"}, "`num_gpus='1'` must be a number of GPUs per actor, 0 or more"),
    ({"num_cpus": -1}, "`num_cpus=-1` must be a number of CPUs per actor, 0 or more"),
    ({"rows_per_call": 2.5}, "`rows_per_call=2.5` must be a whole number"),
    ({"root": 5}, "`root` takes a folder's path, not int 5"),
], ids=["num-gpus-text", "num-cpus-negative", "rows-per-call-fraction", "root-number"])
def test_ray_checks_its_own_arguments_before_any_actor_starts(tmp_path, options, message):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import camcli.ray

    started = ray.is_initialized()
    try:
        with pytest.raises(UsageError) as raised:
            camcli.ray.explain_dataset(ray.data.from_items([{"path": "x"}]), tmp_path / "out", model="demo", **options)
    finally:
        if not started and ray.is_initialized():
            ray.shutdown()
    assert str(raised.value) == message
    assert not (tmp_path / "out").exists()


def test_shard_summaries_of_two_runs_say_which_files_to_remove(odd, tmp_path):
    out = tmp_path / "out"
    image = odd / "scenes" / "circle_1.png"
    for shard in ("1/2", "1/3"):
        assert invoke("explain", image, "--model", "demo", "--shard", shard, "--out", out, "-q").exit_code == 0
    result = invoke("summary", out)
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: shard summaries in {out} disagree on the shard count: [2, 3]; remove "
                                 "the summary.K-of-N.json files of the run that is not this one")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_the_report_never_replaces_an_index_html_camcli_did_not_write(odd, tmp_path, kind):
    """`camcli report` replaced the user's own index.html without a word (explain --report refused it), and a
    folder there was an internal error (IsADirectoryError)."""
    out = tmp_path / "out"
    assert invoke("explain", odd / "scenes" / "circle_1.png", "--model", "demo", "--out", out, "-q").exit_code == 0
    page = out / "index.html"
    if kind == "file":
        page.write_text("<html>my own page</html>")
    else:
        page.mkdir()
    result = invoke("report", out)
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: {page} exists and was not written by camcli; move it away, then "
                                 "write the report (camcli never replaces files it did not write)")
    assert kind == "folder" or page.read_text() == "<html>my own page</html>"
    with pytest.raises(UsageError):
        _camcli().write_report(out)


def test_an_audit_with_report_checks_the_page_before_it_starts(odd, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<html>my own page</html>")
    result = invoke("audit", odd / "scenes", "--model", "demo", "--report", "--out", out, "-q")
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: {out / 'index.html'} exists and was not written by camcli; write "
                                 "to another output folder (--out) (camcli never replaces files it did not write)")
    assert sorted(path.name for path in out.iterdir()) == ["index.html"]  # nothing explained, nothing audited


def _embedding_model():
    """image 8x8x3 -> conv 'target' -> GAP, concatenated with an Embedding(5) of the int32 input 'idx'."""
    import keras

    image, idx = keras.Input((8, 8, 3), name="image"), keras.Input((1,), dtype="int32", name="idx")
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same", name="target")(image))
    e = keras.layers.Flatten()(keras.layers.Embedding(5, 2, name="embedding")(idx))
    head = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([y, e]))
    return keras.Model([image, idx], head, name="embedded")


@pytest.mark.parametrize("value, reason", [
    ("1.5", "input 'idx' of {image} holds 1.5, and the input takes whole numbers (int32)"),  # was read as 1
    ("1e20", "input 'idx' of {image} holds 1e+20, and the input takes whole numbers (int32)"),  # internal error
    ("99", "the model refused the inputs: indices[0,0] = 99 is not in [0, 5); check the values of its other inputs "
           "(--extra-inputs)"),  # internal error while explaining: InvalidArgumentError: Graph execution error:
], ids=["fraction", "too-large-for-int32", "out-of-the-embedding"])
def test_an_integer_extra_input_takes_whole_numbers_and_the_model_s_refusal_is_one_line(odd, tmp_path, value, reason):
    model = tmp_path / "embedded.keras"
    _embedding_model().save(model)
    table = tmp_path / "idx.csv"
    table.write_text(f"image,idx\ncircle_1.png,{value}\n")
    image = odd / "scenes" / "circle_1.png"
    result = invoke("explain", image, "--model", model, "--input", "image", "--preprocess", "none",
                    "--extra-inputs", table, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["camcli: failed: " + str(image) + ": " + reason.format(image=image)]


def test_the_library_gets_the_model_s_refusal_of_its_inputs_in_one_line():
    camcli = _camcli()
    explainer = camcli.Explainer(camcli.wrap_model(_embedding_model(), image_input="image",
                                                   extra_inputs=lambda key: {"idx": [0]}))
    with pytest.raises(CamcliError) as raised:  # TensorFlow's InvalidArgumentError, with its frames
        explainer.explain([np.zeros((8, 8, 3), np.uint8)], extras={"idx": np.array([[99]], np.int32)})
    assert str(raised.value) == ("the model refused the inputs: indices[0,0] = 99 is not in [0, 5); check the values "
                                 "of its other inputs (`extra_inputs`)")
