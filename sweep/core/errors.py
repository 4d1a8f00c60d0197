"""The one exception type for errors a user can fix."""


class SweepError(Exception):
    """A problem with the user's input or environment, with a one-line message saying how to fix it.

    The CLI prints the message on one line and exits with code 2; anything else is a bug and keeps
    its traceback.
    """

    exit_code = 2


class SweepStopped(SweepError):
    """A sweep that cannot go on (its trials keep failing): one line, exit code 1."""

    exit_code = 1
