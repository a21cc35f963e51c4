"""One error type per failure a user can act on.

Every public function that reads user files raises a subclass of :class:`CellsegError` with a
message that names the file/key and says what is wrong. The CLI prints ``str(err)`` on one line
and exits non-zero; the app shows it in a message box.
"""


class CellsegError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(CellsegError):
    """A Detectron2 config that cannot be read or has unknown/mistyped keys."""


class CheckpointError(CellsegError):
    """A checkpoint that is unreadable, unsafe, or does not fit the model."""


class ImageReadError(CellsegError):
    """A missing, unreadable or unsupported image file."""


class DataError(CellsegError):
    """Malformed annotations (COCO JSON, label images, project files)."""
