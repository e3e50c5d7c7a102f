"""The one exception type users see: its message is printed as a single line, exit code 2."""


class TinyexitError(Exception):
    """Bad input or an unmet precondition the user can fix (path, file, shape, missing tool)."""
