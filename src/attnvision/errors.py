"""The one exception type for mistakes a user can fix: the CLI prints it as one line, exit 2."""


class UserError(ValueError):
    """Bad input that the user can correct; the message names the problem and the fix."""
