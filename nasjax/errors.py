"""One exception type for bad user input, and helpers that phrase its message.

Every message names the bad value and the valid choices, so that the CLI can print it as
one line and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable


class NasjaxError(ValueError):
    """Bad input from a user: an unknown name, a malformed string, a missing file."""


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    """Raise ``NasjaxError`` unless ``value`` is one of ``choices``.

    Args:
      what: what the value names, e.g. ``"strategy"``.
      value: the value given by the user.
      choices: the valid values.
    """
    choices = list(choices)
    if value not in choices:
        valid = ", ".join(str(c) for c in choices)
        raise NasjaxError(f"unknown {what} {value!r}; valid choices: {valid}")
