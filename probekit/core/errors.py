"""Errors that mean "the user gave us something we cannot use".

The CLI turns a :class:`ProbekitError` into a one-line message and exit code 2; any other
exception is a bug and keeps its traceback.
"""

import re


class ProbekitError(Exception):
    """A bad input or state the user can fix; the message says what is wrong and what to do."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (terminal colour codes removed), or its type's name
    when it has none: what a one-line error quotes of a lower-level failure.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours some messages
    return text.splitlines()[0].strip() if text else type(err).__name__
