"""One exception type for every bad input: the CLI prints its message, never a traceback."""


class GradguardError(Exception):
    """A user-facing error with one clear message (bad file, bad flag, unsupported model)."""


class DataError(GradguardError):
    """A data set that cannot be read: missing, truncated, wrong format, hostile."""


class ModelFileError(GradguardError):
    """A model file that cannot be verified: unreadable, wrong shapes or dtypes, non-finite."""
