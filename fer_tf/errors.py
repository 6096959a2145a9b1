"""User-facing errors.

Every error that a user can cause (a bad path, a broken image, an unknown label, a file that is not
a model) is raised as a :class:`FerTfError` subclass whose message says what was wrong and what to
do. The command-line entry point prints such messages without a traceback, and warnings of the
:class:`FerTfWarning` family as one ``warning:`` line each.
"""


class FerTfError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class DatasetError(FerTfError):
    """A dataset folder, manifest or label is missing or malformed."""


class ImageError(FerTfError):
    """An image file cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoFaceError(ImageError):
    """No face was found in an image."""

    def __init__(self, path):
        super().__init__(path, "no face found")


class OutputError(FerTfError):
    """An output file exists already (and ``--overwrite`` was not given) or cannot be written."""


class FolderInUse(OutputError):
    """Another process is writing to the folder (a training run's checkpoint folder)."""


class ModelFileError(FerTfError):
    """A model file is missing, truncated, or not a fer_tf model."""


class ConfigError(FerTfError):
    """A configuration value is invalid."""


class MiningError(FerTfError):
    """Identity-aware tuples cannot be built from the given data."""


class TrainingError(FerTfError):
    """Training cannot continue (for example the loss became NaN)."""


class FerTfWarning(UserWarning):
    """Something the user should know, that does not stop the run (printed as one line)."""


class DatasetWarning(FerTfWarning):
    """A dataset was read, but not quite as written (for example a manifest's text encoding)."""


class ImageWarning(FerTfWarning):
    """An image was used, but not all of it (for example only the first frame of an animated GIF)."""
