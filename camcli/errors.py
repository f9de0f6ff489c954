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
    """A file at an output path was not written by camcli; camcli never overwrites it."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"{path} exists and was not written by camcli; write to another output folder "
                         "(camcli never replaces files it did not write)")
