"""Running the CLI in-process, and reading its one-line errors."""

from click.testing import CliRunner

from camcli.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="camcli", catch_exceptions=False)


def only_line(result):
    """The one line on stderr (failing on a traceback or on several lines)."""
    assert "Traceback" not in result.stderr and "File \"" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]
