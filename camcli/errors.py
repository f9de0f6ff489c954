"""The exceptions camcli raises, and what the CLI makes of them.

Every error a user can cause is a `CamcliError` carrying a one-line message that says what to do.
The Click layer turns a `UsageError` into exit status 2 and every other `CamcliError` into exit 1;
neither ever shows a traceback (except behind `--debug`).
"""


class CamcliError(Exception):
    """Base class: a failure with a one-line, actionable message."""


class UsageError(CamcliError):
    """The user asked for something that cannot work (unknown layer, class, option value...)."""


class ModelLoadError(UsageError):
    """A model file is missing, unreadable, invalid or unsafe to load."""


class WeightsUnavailableError(UsageError):
    """Pretrained weights are not in the cache and cannot be downloaded."""


class ImageLoadError(CamcliError):
    """One input image cannot be read. The run goes on with the other images."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ForeignFileError(CamcliError):
    """A file at one image's output path was not written by camcli, which never overwrites it: the
    image fails (camcli.runs.layout.check_replaceable says so)."""


class MissingSummaryError(UsageError):
    """An output folder has no run summary (summary.json or summary.K-of-N.json)."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"no run summary at {path}: is it an output folder of `camcli explain`?")


class CorruptSummaryError(UsageError):
    """A file where the run summary belongs is not a summary camcli wrote."""

    def __init__(self, path, reason):
        self.path = path
        super().__init__(f"{path} is not a camcli run summary: {reason}; remove it, or use another output folder")


# errno values after which every further write would fail the same way: stop at the first.
REPEATING_WRITE_ERRORS = frozenset({28, 30, 122})  # ENOSPC, EROFS, EDQUOT


def one_line(error: BaseException, limit: int | None = None) -> str:
    """The message of `error` as one line, at most `limit` characters (cut with "...") when given.
    TensorFlow's errors from inside a tf.function start with "in user code:" and a stack of frames;
    their last line names the real exception, and is kept. An op's error at run time ("Graph execution
    error:", frames, then what went wrong, then the node) keeps what went wrong."""
    line = _telling_line(error)
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def _telling_line(error: BaseException) -> str:
    """The line of `error`'s message that says what went wrong (see one_line)."""
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Graph execution error:"):  # TensorFlow's op error: frames, then what went wrong
        told = [line for line in lines[1:] if not line.startswith(("[[", "File ", "Detected at node"))]
        return told[-1] if told else lines[0]
    if lines[0].startswith("in user code:"):
        for line in reversed(lines):
            head, _, rest = line.partition(":")
            if head.endswith(("Error", "Exception")) and " " not in head and rest.strip():
                return rest.strip() if head == type(error).__name__ else line
        return lines[-1]
    return lines[0]
