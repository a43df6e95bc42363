"""Command-line flags shared by ``python -m nasjax`` and every experiment script.

Three things, in one place so that every entry point answers alike:

* typed flag values checked at parse time (``type=`` of ``argparse``): :func:`at_least`
  and its names :data:`positive_int`, :data:`nonneg_int`, :data:`seed`;
  :func:`int_in`; :func:`float_in` and :data:`positive_float`, :data:`nonneg_float`,
  :data:`fraction`; :func:`list_of` for comma-separated values. A bad value is one line
  naming the flag, the value and the valid range (``--learning-rate must be > 0, got -1``;
  ``nan`` and ``inf`` are refused as well);
* :class:`OneLineErrorParser`: every parse error is a ``NasjaxError`` (one line, exit 2);
* :func:`run_entry` and :func:`run_script`: the body of a ``main()``. Bad input
  (:class:`~nasjax.errors.NasjaxError`) is one line and exit 2; Ctrl-C (SIGINT) is one
  line and exit 130 (:class:`~nasjax.errors.Interrupted` says where a search loop stopped;
  its run folder is kept, and ``--resume`` continues it).

:func:`check_memory` refuses a size that would not fit in memory (e.g. ``--seeds``) with an
estimate, before anything is allocated.

Foundation-level: imports only :mod:`nasjax.errors`, :mod:`nasjax.devices` (every entry
point turns on the persistent compilation cache) and the standard library.
"""

from __future__ import annotations

import _thread
import argparse
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from nasjax.devices import use_compilation_cache
from nasjax.errors import Interrupted, NasjaxError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
SEED_MAX = 2**32 - 1  # NumPy's seeds (MNIST-1D, data splits) are uint32


def flag_name(name: str) -> str:
    """``"batch_size"`` -> ``"--batch-size"``."""
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------- typed values
def _named(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    parse.__name__ = parse.__qualname__ = name  # argparse names a type by it
    return parse


def _as_int(text: str, valid: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer {valid}, got {text!r}") from None


def at_least(least: int) -> Callable[[str], int]:
    """An integer flag ``>= least`` (``type=at_least(2)``)."""

    def parse(text: str) -> int:
        value = _as_int(text, f">= {least}")
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {text}")
        return value

    return _named(parse, f"int>={least}")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer flag in ``low..high`` (both included)."""

    def parse(text: str) -> int:
        value = _as_int(text, f"in {low}..{high}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text}")
        return value

    return _named(parse, f"int in {low}..{high}")


def _float_range(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(high):
        return f"> {low:g}" if low_open else f">= {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def float_in(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """A finite float flag in the interval from ``low`` to ``high`` (each end included
    unless ``*_open``); ``nan`` and ``inf`` are refused."""
    valid = _float_range(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {valid}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {valid}, got {text}")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text}")
        return value

    return _named(parse, f"float {valid}")


def list_of(item: Callable[[str], Any]) -> Callable[[str], list]:
    """A comma-separated list flag, each item checked by the type ``item``
    (``type=list_of(nonneg_float)``)."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"must be a comma-separated list, got {text!r}")
        try:
            return [item(part) for part in parts]
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"{err} (in {text!r})") from None

    return _named(parse, f"list of {item.__name__}")


positive_int = at_least(1)
nonneg_int = at_least(0)
seed = int_in(0, SEED_MAX)
positive_float = float_in(0.0, low_open=True)
nonneg_float = float_in(0.0)
fraction = float_in(0.0, 1.0, low_open=True)  # (0, 1]


# ----------------------------------------------------------------- memory
def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tensorboard_flag(p: argparse.ArgumentParser) -> None:
    """Adds ``--tensorboard DIR`` (:func:`nasjax.tracking.tensorboard_callbacks`): the
    run's records mirrored as TensorBoard scalars; it never changes results."""
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also log every record to TensorBoard here (tensorboardX)",
    )


def check_memory(flag: str, count: int, bytes_each: float, share: float = 0.5) -> None:
    """Refuses ``count`` items of ``bytes_each`` bytes that would need more than ``share`` of
    the memory available now: one line with the estimate and how many fit.

    Example: ``--seeds 100000000 would need ~1490.1 GiB; at most 4200000 fit in half of the
    15.6 GiB available``.
    """
    available = available_memory()
    need = count * bytes_each
    if need > share * available:
        fit = int(share * available // max(bytes_each, 1))
        raise NasjaxError(
            f"{flag} {count} would need ~{need / 2**30:.1f} GiB; at most {fit} fit in "
            f"{'half of ' if share == 0.5 else ''}the {available / 2**30:.1f} GiB available"
        )


# ----------------------------------------------------------------- parser and entry
_TYPE_ERROR = re.compile(r"^argument (-[^/:]+)(?:/[^:]+)?: (must be .*)$", re.DOTALL)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are a :class:`~nasjax.errors.NasjaxError` (inside
    :func:`run_entry`: one ``error: ...`` line and exit status 2, also when a test calls
    ``main``); a typed flag's error reads ``--flag must be ..., got VALUE``. Subparsers
    are of the same class."""

    def error(self, message: str) -> None:  # one line, exit 2 (through run_entry)
        typed = _TYPE_ERROR.match(message)
        if typed:
            message = f"{typed.group(1)} {typed.group(2)}"
        raise NasjaxError(message)

    def parse_sized(
        self,
        argv: Sequence[str] | None,
        smoke: dict[str, Any] | None = None,
        minimum: dict[str, int] | None = None,
    ) -> argparse.Namespace:
        """Parses ``argv`` as an experiment script does: with ``--smoke``, every flag of
        ``smoke`` is capped at its value (numbers) or replaced by it (others); then every
        flag of ``minimum`` must be at least its value, else one ``NasjaxError`` line
        (prefer ``type=at_least(n)``, checked at parse time)."""
        args = vars(self.parse_args(argv))
        if args.get("smoke"):
            for name, value in (smoke or {}).items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                args[name] = min(args[name], value) if number else value
        for name, least in (minimum or {}).items():
            if args[name] < least:
                raise NasjaxError(f"{flag_name(name)} must be >= {least}, got {args[name]}")
        return argparse.Namespace(**args)


def _unraisable(hook: Callable[[Any], None], timers: list) -> Callable[[Any], None]:
    """``sys.unraisablehook`` that re-raises a Ctrl-C which met a finaliser or a gc callback
    (JAX runs one at every collection): Python would print it as ``Exception ignored`` and
    drop it; delivered again by a helper thread once this hook has returned (from inside
    it, Python would drop it again), it stops the run at the main thread's next line."""

    def hook_or_reraise(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            timers.append(threading.Timer(0.01, _thread.interrupt_main, (signal.SIGINT,)))
            timers[-1].start()
        else:
            hook(info)

    return hook_or_reraise


def run_entry(
    body: Callable[[], Any],
    *,
    prefix: str = "",
    resumable: bool | Callable[[], bool] = False,
) -> int:
    """Runs ``body()`` as the body of a ``main()`` and returns the exit status.

    0 when it returns; 2 and one ``{prefix}error: ...`` line on stderr for a
    :class:`~nasjax.errors.NasjaxError`; 130 and one line for Ctrl-C (SIGINT): the
    :class:`~nasjax.errors.Interrupted` message of a search loop (where it stopped), else
    ``interrupted`` (with ``; resume with --resume`` when ``resumable`` is, or returns,
    true). No traceback either way. Turns on the persistent compilation cache first
    (:func:`nasjax.devices.use_compilation_cache`).
    """
    use_compilation_cache()
    hook, timers = sys.unraisablehook, []
    if threading.current_thread() is threading.main_thread():
        sys.unraisablehook = _unraisable(hook, timers)
    try:
        body()
    except NasjaxError as err:
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            line = str(err)
        elif resumable() if callable(resumable) else resumable:
            line = "interrupted; resume with --resume"
        else:
            line = "interrupted"
        print(f"{prefix}{line}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        sys.unraisablehook = hook
        for timer in timers:  # a body that ended before its Ctrl-C came back: it is done
            timer.cancel()
    return 0


def run_script(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
    *,
    status_from_run: bool = False,
) -> int:
    """``run(parse_args(argv))`` for an experiment script through :func:`run_entry`: 0, 2
    and one error line, or 130 and one line on Ctrl-C (naming ``--resume`` where the
    script has that flag). With ``status_from_run``, a run that completes exits with the
    int ``run`` returns (a benchmark's 1 when its two implementations disagree)."""
    parsed: list[argparse.Namespace] = []
    returned: list[Any] = []

    def body() -> None:
        parsed.append(parse_args(argv))
        returned.append(run(parsed[0]))

    status = run_entry(body, resumable=lambda: bool(parsed) and hasattr(parsed[0], "resume"))
    return int(returned[0]) if status == 0 and status_from_run else status
