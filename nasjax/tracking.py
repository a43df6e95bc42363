"""Tracking hooks: the search loops call callbacks with each record and at the end.

The JSONL log of a run stays the source of truth; a callback mirrors it elsewhere (a
dashboard, a tracker). A callback has two methods:

* ``on_record(record, step)``: after each record is written (one per evaluated
  architecture in :func:`nasjax.search.run_search`, one per epoch in
  :func:`nasjax.search.gradient_search`), ``step`` its index in the run (stable across
  ``--resume``: a resumed run calls it for the records it recomputes and the new ones);
* ``on_end(result)``: once, with the run's final numbers (e.g. ``best_fitness``).

:class:`TensorBoardWriter` is one (``--tensorboard DIR``): every numeric field of a record
becomes a scalar ``<prefix>/<field>`` at ``step``, with ``tensorboardX`` (no TensorFlow),
imported only when one is made, so ``import nasjax`` does not need it;
:func:`read_scalars` reads such a folder back.

Foundation-level: imports only :mod:`nasjax.errors` (and tensorboardX lazily).
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nasjax.errors import NasjaxError

_WRITERS = itertools.count()  # writers opened by this process (their files' suffixes)

SKIPPED = frozenset({"generation", "member", "epoch", "step", "wall_s"})
"""Record fields that index a record or time it rather than measure it (not logged)."""


@runtime_checkable
class Callback(Protocol):
    """What the search loops call (see the module docstring)."""

    def on_record(self, record: dict[str, Any], step: int) -> None: ...

    def on_end(self, result: dict[str, Any]) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's numeric fields as floats (a list of numbers ``k`` becomes ``k/0``,
    ``k/1``, ...; indices, times, strings and nested values are left out)."""
    out = {}
    for key, value in record.items():
        if key in SKIPPED or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, list) and value and key not in ("genotype",):
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                out.update({f"{key}/{i}": float(v) for i, v in enumerate(value)})
    return out


def notify_records(callbacks: Sequence[Callback], records: list[dict], first_step: int) -> None:
    """Calls every callback's ``on_record`` for ``records``, numbered from ``first_step``."""
    for i, record in enumerate(records):
        for callback in callbacks:
            callback.on_record(record, first_step + i)


def notify_end(callbacks: Sequence[Callback], result: dict[str, Any]) -> None:
    """Calls every callback's ``on_end`` with ``result``."""
    for callback in callbacks:
        callback.on_end(result)


def tensorboard_callbacks(logdir: str | os.PathLike | None, prefix: str = "search") -> list:
    """``[TensorBoardWriter(logdir, prefix)]``, or no callback without a ``logdir`` (the
    value of a ``--tensorboard`` flag, :func:`nasjax.flags.tensorboard_flag`)."""
    return [TensorBoardWriter(logdir, prefix)] if logdir else []


def read_scalars(logdir: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Every scalar of the events files in ``logdir``: ``tag -> step -> value`` (float32
    values as floats), read with tensorboardX's protobuf, no TensorFlow: each file is
    TFRecord framing (length, its CRC, the ``Event``, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        blob, at = path.read_bytes(), 0
        while at < len(blob):
            (length,) = struct.unpack("<Q", blob[at : at + 8])
            event = Event.FromString(blob[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


class TensorBoardWriter:
    """A callback writing each record's numbers as TensorBoard scalars (tensorboardX).

    Args:
      logdir: the folder of the events file (created).
      prefix: the scalars' tag prefix, e.g. ``"search"`` -> ``search/fitness``.

    Raises:
      NasjaxError: tensorboardX is not installed (``pip install 'nasjax[tensorboard]'``),
        or ``logdir`` cannot be made.
    """

    def __init__(self, logdir: str | os.PathLike, prefix: str = "search") -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise NasjaxError(
                "--tensorboard needs tensorboardX (no TensorFlow): pip install "
                "'nasjax[tensorboard]' or tensorboardX"
            ) from None
        # tensorboardX names its file by the second and the host: two writers opened in
        # one second (one per search of a script) would write one file; a suffix of the
        # prefix, the process and a count keeps each its own.
        suffix = f".{prefix}.{os.getpid()}.{next(_WRITERS)}"
        try:
            self._writer = SummaryWriter(logdir=os.fspath(logdir), filename_suffix=suffix)
        except OSError as err:
            raise NasjaxError(f"cannot write TensorBoard logs to {str(logdir)!r}: {err}") from None
        self.prefix = prefix
        self._last_step = 0

    @property
    def logdir(self) -> str:
        """The folder holding the events file."""
        return self._writer.logdir

    def on_record(self, record: dict[str, Any], step: int) -> None:
        """Writes ``record``'s numbers at ``step`` (non-finite values too: NaN fitness)."""
        for key, value in scalars(record).items():
            self._writer.add_scalar(f"{self.prefix}/{key}", value, step)
        self._last_step = max(self._last_step, step)

    def on_end(self, result: dict[str, Any]) -> None:
        """Writes ``result``'s numbers under ``<prefix>/final/`` and closes the file."""
        for key, value in scalars(result).items():
            if math.isfinite(value):
                self._writer.add_scalar(f"{self.prefix}/final/{key}", value, self._last_step)
        self._writer.close()
