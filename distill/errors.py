"""Errors that mean "the user asked for something that cannot be done".

The command line turns a `UserError` into one line on stderr and exit status 2, with no
traceback. Everything else is a bug or a failed run (exit status 1).
"""


class UserError(Exception):
    """Bad input: usage, config, missing data, a checkpoint that does not fit.

    The message is one line that names the problem and the fix.
    """


class ConfigError(UserError):
    """A config key is unknown, has the wrong type, or is out of range."""


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop (SIGTERM from a scheduler, or SIGINT): raised where the
    program is, so that the run is marked in meta.json and the command exits 143 / 130.
    A KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        return 143 if self.signal_name == "SIGTERM" else 130
