"""The one exception a user's mistake raises: the CLI prints it as one line and exits 2."""


class AlmostError(Exception):
    """A problem with the user's input or settings: the CLI prints it as one line and exits 2."""
