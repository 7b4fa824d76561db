"""The one exception type for mistakes a user can fix."""


class GreenkdError(Exception):
    """A user error: bad input, a missing file, an impossible request.

    The message says what is wrong and how to fix it; the CLI prints it as one
    line on stderr and exits with code 2.
    """
