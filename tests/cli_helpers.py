"""Running the CLI in-process, reading its one-line errors and its JSON files."""

import json
from pathlib import Path

from click.testing import CliRunner

from camcli.cli import cli


def invoke(*args):
    """Run `camcli ARGS` in this process; stdout and stderr are kept apart (Click 8.2+)."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="camcli", catch_exceptions=False)


def read_json(path):
    return json.loads(Path(path).read_text("utf-8"))


def only_line(result, click_usage=False):
    """The one line on stderr that explains a failed command (failing on a traceback or on several lines).

    With `click_usage`, Click's own usage errors count as one line too: "Usage: ...", "Try '... --help' for
    help.", then exactly one "Error: ..." line, which is returned; camcli's own errors must still be alone."""
    assert "Traceback" not in result.stderr and "File \"" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if click_usage and not (lines and lines[0].startswith("camcli: error:")):
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr
        return errors[0]
    assert len(lines) == 1, result.stderr
    return lines[0]


def readme_bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks of the README section that starts with `heading` (up to the next "## ")."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    start = readme.index(heading)
    return re.findall(r"```bash\n(.*?)```", readme[start:readme.index("\n## ", start + 1)], flags=re.DOTALL)


def run_readme_recipe(heading: str, folder: Path):
    """Run the one ```bash block of the README section `heading` in `folder` (with the sample images linked
    there), as a user's shell would; the finished process."""
    from test_readme_recipes import run_recipe

    [script] = readme_bash_blocks(heading)
    (folder / "sample_images").symlink_to(Path(__file__).resolve().parents[1] / "sample_images")
    result = run_recipe(script, folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return result
