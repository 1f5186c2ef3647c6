"""Errors a person can act on.

`UserError` is for bad input or configuration: the CLI prints its one-line message and
exits 2, with no stack trace. Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, bad config or a failed data gate; the message says what and where."""


class DataQualityError(UserError):
    """A validation gate failed: the message names the rule, the table and the count."""
