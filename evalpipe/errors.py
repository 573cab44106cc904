"""The one error type the command line turns into a one-line message (no traceback)."""


class EvalpipeError(ValueError):
    """Something the user can fix: bad input, a missing file, a server that is down.
    The message is one line that names the file, record, key or URL concerned."""
