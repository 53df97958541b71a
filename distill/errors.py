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
