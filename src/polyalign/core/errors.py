"""The one exception type the CLI turns into a one-line message and exit code 2."""


class PolyalignError(Exception):
    """A user-facing error: bad input, missing file, inconsistent configuration."""
