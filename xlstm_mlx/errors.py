"""The project's errors: a user's mistake or a bad file, never a bug.

Every one carries a message that names the problem and the fix. The CLI prints it as one line and exits 2
(xlstm_mlx/cli.py); any other exception is a bug and keeps its traceback. They subclass the built-in type
that describes them (ValueError, FloatingPointError), so `except ValueError` in user code keeps working.
"""


class XLSTMError(Exception):
    """Base of every project error."""


class CheckpointError(XLSTMError, ValueError):
    """A checkpoint that cannot be loaded as it is."""


class SnapshotError(XLSTMError, ValueError):
    """A state snapshot that cannot be used with this model."""


class NumericsError(XLSTMError, FloatingPointError):
    """A NaN or Inf appeared; the message says where and what to try."""


class UsageError(XLSTMError, ValueError):
    """An invalid argument or option value."""


class MissingFileError(XLSTMError, FileNotFoundError):
    """A file or directory the user named does not exist."""
