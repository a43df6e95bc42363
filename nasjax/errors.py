"""One exception type for bad user input, one for an interrupted run, and helpers that
phrase their messages.

Every message names the bad value and the valid choices, so that the CLI can print it as
one line and exit non-zero (2 for bad input, 130 for an interrupted run).
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral


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


def check_positive(**values: object) -> None:
    """Raise ``NasjaxError`` unless every keyword value is an integer ``>= 1``.

    Example: ``check_positive(channels=channels)`` -> "channels must be an integer >= 1,
    got 0".
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise NasjaxError(f"{name} must be an integer >= 1, got {value!r}")


class CapabilityError(NasjaxError):
    """A search space asked for a network capability it does not have (one line naming the
    space, the capability and what to use instead; see :mod:`nasjax.spaces.contract`)."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C); the message says where, and how to resume it
    (raised by :class:`nasjax.rundir.RunDir` in place of the ``KeyboardInterrupt``)."""
