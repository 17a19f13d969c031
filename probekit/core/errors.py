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


class ConfigError(ProbekitError):
    """A bad value of one field of a config (``ExtractConfig``, ``ProbeRunConfig``, ...).

    The message is a template that names the field as ``{field}``: the library prints the field's
    own name (``draws must be at least 1``); the command line prints the flag that sets it
    (``--draws must be at least 1``), so neither speaks the other's vocabulary.
    """

    def __init__(self, field: str, template: str) -> None:
        self.field, self.template = field, template
        super().__init__(template.format(field=field))

    def naming(self, name: str) -> str:
        """The message with the field called ``name`` (for example its command-line flag)."""
        return self.template.format(field=name)
