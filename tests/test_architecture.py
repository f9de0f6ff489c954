"""The shape of the package: the library API the CLI calls, imports that go one way, a thin CLI, one
owner for the output names, a distribution name of our own, and version bounds that say what is tested."""

import ast
import json
import re
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

import camcli
from camcli.cli import cli

PACKAGE = Path(camcli.__file__).resolve().parent
REPO = PACKAGE.parent

# Imports go one way: a package may import those listed for it (and itself), never a higher one.
# camcli/options.py (the option groups) sits above models: explain and everything above it take the groups.
ALLOWED = {
    "errors": set(),
    "maps": {"errors"},
    "models": {"errors", "maps"},
    "options": {"errors", "maps", "models"},
    "explain": {"errors", "maps", "models", "options"},
    "runs": {"errors", "maps", "models", "options"},
    "evaluate": {"errors", "maps", "models", "options", "explain", "runs"},
    "report": {"errors", "maps", "runs"},
    "audit": {"errors", "maps", "models", "options", "explain", "runs", "evaluate", "report"},
}
# The one import against the grain: a MapRequest checks its method names (and Score-CAM's max_channels)
# against the method registry when it is made, importing it inside the check, so that an unknown method
# is one line before any model loads; the registry stays the one list of methods.
AGAINST_THE_GRAIN = {("options.py", "camcli.explain.methods")}
# The demo's training scripts are tools on top of everything (they explain to check their models).
SCRIPTS = {"models/demo/train.py", "models/demo/cheat.py", "models/demo/samples.py"}


def camcli_imports(path: Path):
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("camcli"):
            parts = node.module.split(".")
            if len(parts) == 1:  # from camcli import x
                yield from (f"camcli.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("camcli"))


def test_imports_go_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        layer = relative.split("/")[0].removesuffix(".py")
        if layer not in ALLOWED or relative in SCRIPTS:
            continue
        for module in camcli_imports(path):
            target = module.split(".")[1] if "." in module else ""
            if target in ("", "__version__") or target == layer or (relative, module) in AGAINST_THE_GRAIN:
                continue
            if target not in ALLOWED[layer]:
                wrong.append(f"{relative} imports {module}")
    assert wrong == []


def test_the_public_api_is_what_the_cli_calls():
    for name in ("explain_paths", "evaluate_paths", "sanity_paths", "audit_paths", "write_report", "list_layers",
                 "merge_summaries", "Explainer", "MethodSet", "load_model", "wrap_model", "load_rgb"):
        assert callable(getattr(camcli, name)), name
    tree = ast.parse((PACKAGE / "cli.py").read_text("utf-8"))
    called = {node.names[0].name for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module == "camcli.api"}
    assert called == {"explain_paths", "evaluate_paths", "sanity_paths", "audit_paths", "write_report", "list_layers",
                      "merge_summaries"}


def test_cli_commands_are_thin():
    """Each command body: options in, one library call, printing out (the explain body was 75 lines)."""
    tree = ast.parse((PACKAGE / "cli.py").read_text("utf-8"))
    bodies = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list):
            first = node.body[1] if isinstance(node.body[0], ast.Expr) else node.body[0]  # after the docstring
            bodies[node.name] = node.end_lineno - first.lineno + 1
    assert set(bodies) == {"explain", "evaluate_command", "audit_command", "summary", "report_command", "layers",
                           "models", "methods"}
    assert max(bodies.values()) <= 20, bodies


def test_output_names_have_one_owner():
    """No module but runs/layout.py spells an output name or the marker."""
    names = (r"summary\.json|index\.html|evaluation\.json|evaluation\.csv|\.thumb\.jpg|\.camcli\.|\.npy|\.mask\.png|"
             r"\.panel\.png|\.segmentation\.png")
    spelled = re.compile(rf"""["']({names})["']""")
    found = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
             if path.name != "layout.py" and spelled.search(path.read_text("utf-8"))]
    assert found == []


def test_the_distribution_has_a_name_of_its_own_and_bounded_keras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["name"] == "keras-camcli"  # `camcli` on PyPI is an unrelated 2020 package
    assert project["scripts"] == {"camcli": "camcli.cli:main"}
    keras = [d for d in project["dependencies"] if d.startswith("keras")]
    assert keras == ["keras>=3.3,<4"]
    readme = (REPO / "README.md").read_text("utf-8")
    assert "pip install camcli" not in readme and 'pip install "camcli' not in readme
    assert 'pip install "keras-camcli[cpu]"' in readme
    assert (PACKAGE / "py.typed").is_file()


def test_the_report_styles_and_script_are_package_files():
    assert (PACKAGE / "report" / "page.css").stat().st_size > 500
    assert (PACKAGE / "report" / "page.js").stat().st_size > 500
    assert "_CSS = " not in (PACKAGE / "report" / "page.py").read_text("utf-8")


def test_ci_runs_the_linter():
    ci = (REPO / ".ci" / "run").read_text("utf-8")
    assert "make lint" in ci or "ruff check" in ci
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["ruff"]["lint"]
    assert "C90" in config["select"] and config["mccabe"]["max-complexity"] <= 12


@pytest.mark.parametrize("command", ["explain", "evaluate", "summary", "report", "layers", "models", "methods"])
def test_debug_is_an_option_of_every_command(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "--debug" in result.output


def test_explain_paths_writes_what_the_cli_writes(tmp_path):
    """A notebook's call and the command give the same records."""
    from camcli.models.demo.samples import write_generated

    write_generated(tmp_path / "in")
    summary = camcli.explain_paths([tmp_path / "in"], model="demo", out=tmp_path / "lib", top_k=3)
    assert (summary.images, summary.ok, summary.failed) == (6, 6, 0)
    result = CliRunner().invoke(cli, ["explain", str(tmp_path / "in"), "--model", "demo", "--out",
                                      str(tmp_path / "cli"), "--top-k", "3", "-q"])
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*"))
    assert names == sorted(p.relative_to(tmp_path / "cli").as_posix() for p in (tmp_path / "cli").rglob("*"))
    for name in names:
        if name.endswith(".json") and name != "summary.json":
            lib, cli_record = ((tmp_path / side / name).read_text() for side in ("lib", "cli"))
            assert json.loads(lib) == json.loads(cli_record)
    assert summary.as_record()["fingerprint"] == json.loads((tmp_path / "cli" / "summary.json").read_text())[
        "fingerprint"]


def _parameters(function: ast.FunctionDef) -> list[tuple[str, ast.expr | None]]:
    """(name, default) of a function's parameters, self and cls left out."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True)) + list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    pairs += [(extra, None) for extra in (args.vararg, args.kwarg) if extra is not None]
    return [(arg.arg, default) for arg, default in pairs if arg.arg not in ("self", "cls")]


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE).as_posix(), node


def test_no_public_function_takes_more_than_12_parameters():
    """Options travel in their groups (camcli.options), not as long parameter lists."""
    long = [f"{where}:{node.lineno} {node.name} ({len(_parameters(node))})" for where, node in _functions()
            if (not node.name.startswith("_") or node.name == "__init__") and len(_parameters(node)) > 12]
    assert long == []


# Parameters named as an option field whose literal default is no option's default: why each is allowed.
NOT_AN_OPTION_DEFAULT = {
    ("runs/layout.py", "map_paths", "overlay_format"): "the format one image's overlay was resolved to, never auto",
    ("runs/writer.py", "planned_files", "overlay_format"): "the same, for the paths planned for one image",
    ("explain/forward.py", "__init__", "image_input"): "the image input's position, not its name",
    ("models/loading.py", "LoadedModel", "image_input"): "the same position, as the loaded model holds it",
    ("runs/runner.py", "RunSummary", "images"): "a count of images, not SanityOptions.images",
    ("keras.py", "__init__", "preprocess"): "a Keras model in memory takes raw pixels unless told (wrap_model's rule)",
    ("models/loading.py", "wrap_model", "preprocess"): "the rule itself: ModelOptions' None means it for a Keras model",
    ("models/demo/train.py", "gradcam_peak_in_box_rate", "batch_size"): "the training script's evaluation batch",
}


def test_option_defaults_are_written_once_in_camcli_options():
    """A parameter or field named as an option takes its default from camcli.options (field_default,
    MASKED_BATCH...), never a literal of its own: a changed default changes everywhere."""
    from camcli.options import GROUPS, field_names

    options = {name for group in GROUPS for name in field_names(group)}
    literal = []
    for where, node in _functions():
        for name, default in _parameters(node):
            if (where != "options.py" and name in options and isinstance(default, ast.Constant)
                    and default.value is not None and not isinstance(default.value, bool)
                    and (where, node.name, name) not in NOT_AN_OPTION_DEFAULT):
                literal.append(f"{where}:{node.lineno} {node.name}({name}={default.value!r})")
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if where != "options.py" and isinstance(node, ast.ClassDef):
                literal += [f"{where}:{item.lineno} {node.name}.{item.target.id}={item.value.value!r}"
                            for item in node.body if isinstance(item, ast.AnnAssign)
                            and isinstance(item.target, ast.Name) and item.target.id in options
                            and isinstance(item.value, ast.Constant) and item.value.value is not None
                            and not isinstance(item.value.value, bool)
                            and (where, node.name, item.target.id) not in NOT_AN_OPTION_DEFAULT]
    assert literal == []


def test_every_per_map_file_kind_is_in_the_one_table():
    """layout.MAP_FILES names each kind of a map's files once: the layout's names, the records' keys, the
    writer's required files and writers, and the report's links are read from it."""
    import dataclasses

    from camcli.options import FileOptions
    from camcli.runs import records, writer
    from camcli.runs.layout import MAP_FILES, Layout

    keys = [kind.key for kind in MAP_FILES]
    assert list(records.MAP_FILE_KEYS) == keys
    assert set(writer.MAP_WRITERS) == {kind.key for kind in MAP_FILES if not kind.per_method}
    flags = {item.name for item in dataclasses.fields(FileOptions) if item.default is False}
    assert {kind.option for kind in MAP_FILES} - {None} <= flags
    everything = FileOptions(**{kind.option: True for kind in MAP_FILES if kind.option})
    assert writer.required_files(everything) == tuple(keys)
    assert writer.required_files(FileOptions()) == ("overlay",)
    paths = Layout("out").map_paths("cat", "gradcam", 3, "webp")
    assert sorted(paths) == sorted(kind.key for kind in MAP_FILES if not kind.per_method)
    assert len(set(paths.values())) == len(paths)
    page = (PACKAGE / "report" / "page.py").read_text("utf-8")
    assert "MAP_FILES" in page and '"mask"' not in page and '"panel"' not in page


# Top-level names that several modules may define, and why. Anything else is one thing with one name.
SHARED_NAMES = {
    "__all__": "each module's own list of what it exports",
    "main": "the entry point of each runnable module (the console script; python -m camcli.models.demo.train ...)",
}


def _top_level_names(path: Path) -> set[str]:
    """The functions, classes and constants a module defines at its top level (imports are not definitions)."""
    names, body = set(), list(ast.parse(path.read_text("utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):  # definitions under a module-level if or try
            body += node.body + node.orelse + getattr(node, "finalbody", []) \
                + [n for handler in getattr(node, "handlers", []) for n in handler.body]
    return names


def test_no_top_level_name_is_defined_in_two_modules():
    """One name, one thing (issue 27): a function, class or constant defined at the top of one camcli
    module is defined at the top of no other. A second meaning gets a name that says what it is; a
    shared fact is defined once and imported."""
    modules: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _top_level_names(path):
            modules.setdefault(name, []).append(path.relative_to(PACKAGE).as_posix())
    assert {name: where for name, where in modules.items() if len(where) > 1 and name not in SHARED_NAMES} == {}


def test_method_kinds_are_read_from_the_methods_never_from_their_names():
    """Only the registry (explain/methods.py) tells methods apart: no other module compares a method
    name with a registered one, keeps a collection of registered names, or asks isinstance of a
    method class. They read the method's attributes (guided, needs_gradients, comparable_map...) or
    the record's fields (an explanation's "guided")."""
    from camcli.explain.methods import REGISTRY

    classes = {type(method).__name__ for method in REGISTRY.values()}

    def is_name(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in REGISTRY

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where == "explain/methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            compared = isinstance(node, ast.Compare) and any(map(is_name, [node.left, *node.comparators]))
            listed = isinstance(node, (ast.Set, ast.Tuple, ast.List)) and sum(map(is_name, node.elts)) > 1
            asked = (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance"
                     and any(isinstance(n, ast.Name) and n.id in classes for n in ast.walk(node.args[1])))
            if compared or listed or asked:
                found.append(f"{where}:{node.lineno}")
    assert found == []
