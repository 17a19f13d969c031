"""Errors that mean "the user gave us something we cannot use".

The CLI turns a :class:`ProbekitError` into a one-line message and exit code 2; any other
exception is a bug and keeps its traceback.
"""


class ProbekitError(Exception):
    """A bad input or state the user can fix; the message says what is wrong and what to do."""
