"""Runs an entry point with one fault injected at an exact point of its run folder's life.

Usage::

    python tests/fault_runner.py FAULT TARGET [ARGS...]

``TARGET`` is ``nasjax`` (``python -m nasjax``) or the path of an experiment script;
``ARGS`` are its flags. ``FAULT`` is ``none`` or ``SIGNAL@POINT`` with ``SIGNAL`` ``kill``
(SIGKILL, as ``kill -9``) or ``int`` (SIGINT, as Ctrl-C) and ``POINT``

* ``restore``: when the loop has restored its state (or found none), before any step;
* ``save:N``: when the loop is about to checkpoint step ``N`` (its records of step ``N`` are
  already in the log): ``save:1`` is before the first checkpoint, ``save:2`` mid-run;
* ``retrain``: when the search loop has ended (its run folder closed) and the final
  retraining starts.

The process sends the signal to itself there, so where it stops does not depend on timing
(tests/test_faults.py). Nothing else changes: the real entry point runs unmodified.
"""

import os
import runpy
import signal
import sys

from nasjax.rundir import RunDir

SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT}
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored


def inject(fault: str) -> None:
    """Patches :class:`RunDir` so that ``fault`` happens at its point."""
    if fault == "none":
        return
    name, point = fault.split("@")
    signum = SIGNALS[name]
    if point.startswith("save:"):
        step, save = int(point.split(":")[1]), RunDir.save

        def faulty_save(self, at: int, tree) -> None:
            if at == step:
                os.kill(os.getpid(), signum)
            save(self, at, tree)

        RunDir.save = faulty_save
    elif point == "restore":
        restore = RunDir.restore

        def faulty_restore(self, target):
            restored = restore(self, target)
            os.kill(os.getpid(), signum)
            return restored

        RunDir.restore = faulty_restore
    elif point == "retrain":
        leave = RunDir.__exit__

        def faulty_exit(self, exc_type, exc, tb) -> None:
            leave(self, exc_type, exc, tb)
            if exc_type is None:
                os.kill(os.getpid(), signum)

        RunDir.__exit__ = faulty_exit
    else:
        raise SystemExit(f"unknown fault point {point!r}")


def main() -> None:
    fault, target, *args = sys.argv[1:]
    inject(fault)
    if target == "nasjax":
        sys.argv = ["nasjax", *args]
        runpy.run_module("nasjax", run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *args]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
