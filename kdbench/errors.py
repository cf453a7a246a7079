"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(ValueError):
    """A bad spec, parameter or path, with a message that names the file, key and valid values."""

    exit_code = 2
