"""One run folder: its checkpoints, its JSONL log and the settings it was started with.

Every search loop keeps its run in a folder ``OUT``:

* ``OUT/checkpoints/<step>/``: orbax checkpoints (the two newest), each the loop's state
  plus the number of log lines written up to it and a SHA-256 of the state's arrays;
* ``OUT/<log_name>``: one JSON line per record; on resume the lines past the restored
  checkpoint are dropped (the loop recomputes them, identically);
* ``OUT/run_config.json``: the settings that change results and the nasjax version.

A folder holds a run only once it holds a checkpoint: ``run_config.json`` is written in
the same :meth:`RunDir.save` call as the first checkpoint (just before it), and a folder
without a checkpoint is treated as empty, so whatever a run left there before its first
checkpoint (a log, a config) is overwritten by the next one. Bad input (a folder that
already holds a run, ``--resume`` with other settings, a damaged log) is one
:class:`~nasjax.errors.NasjaxError` line; a damaged newest checkpoint falls back to the
older one with one warning line; Ctrl-C inside the loop is one
:class:`~nasjax.errors.Interrupted` line naming the step to resume from.

Foundation-level: imports only :mod:`nasjax.errors` and third-party packages.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from nasjax.errors import Interrupted, NasjaxError

RUN_CONFIG_FILE = "run_config.json"
CHECKPOINT_DIR = "checkpoints"
MAX_TO_KEEP = 2


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``, so
    a reader never sees a half-written file; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 2) -> None:
    """Writes JSON atomically (:func:`write_text_atomic`; a payload that is not JSON raises
    before anything is written)."""
    write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n")


def read_json_record(
    path: str | os.PathLike, fmt: str, version: int, fields: tuple[str, ...], what: str
) -> dict[str, Any]:
    """The ``fields`` of a JSON record written as ``{"format": fmt, "version": version,
    ...}`` (tables saved by ``to_json`` methods).

    Raises:
      NasjaxError: one line for an unreadable file, another format, another version or a
        missing field (``what`` names the kind of file, e.g. ``"latency table"``).
    """
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise NasjaxError(f"cannot read {what} {str(path)!r}: {err}") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise NasjaxError(f"{str(path)!r} is not a nasjax {what} (format {fmt})")
    missing = [f for f in fields if f not in record]
    if missing or record.get("version") != version:
        raise NasjaxError(
            f"{what} {str(path)!r}: version {record.get('version')!r} "
            f"(expected {version}), missing fields {missing}"
        )
    return {f: record[f] for f in fields}


def flags_config(args: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a parsed command line (an ``argparse.Namespace``) that change a
    run's results: every flag but ``--out``, ``--resume``, ``--no-progress``,
    ``--tensorboard``, the subcommand and ``skip`` (e.g. values derived from flags that
    are not JSON)."""
    ignored = ("command", "out", "resume", "no_progress", "tensorboard", *skip)
    return {k: v for k, v in sorted(vars(args).items()) if k not in ignored}


def nasjax_version() -> str:
    """The installed nasjax version (``"unknown"`` when run from a bare source tree)."""
    try:
        return importlib.metadata.version("nasjax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tree_checksum(tree: Any) -> str:
    """SHA-256 of a pytree's leaves (shape and values; integer and float leaves compared
    as float64, so a Python int saved and restored as an array hashes the same)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(leaf)
        if array.dtype.kind in "biuf":
            array = array.astype(np.float64)
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _config_changes(old: dict, new: dict) -> list[str]:
    """``--flag OLD -> NEW`` for every key whose value differs (``(unset)`` if absent)."""
    unset = object()
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, unset), new.get(key, unset)
        if before != after:
            shown = ["(unset)" if v is unset else repr(v) for v in (before, after)]
            changes.append(f"{_flag(key)} {shown[0]} -> {shown[1]}")
    return changes


def _short(err: BaseException) -> str:
    """One short line for an exception (orbax's and TensorStore's run to pages)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


@contextlib.contextmanager
def _logging_off() -> Iterator[None]:
    """Silences orbax on a damaged checkpoint: its absl ERROR lines (Python logging) and
    the ``RuntimeError: Event loop is closed`` tracebacks that TensorStore's late read
    callbacks raise once orbax has given up on the step (``sys.unraisablehook``)."""
    previous, hook = logging.root.manager.disable, sys.unraisablehook

    def drop_closed_loop(info: Any) -> None:
        if not (
            isinstance(info.exc_value, RuntimeError) and "loop is closed" in str(info.exc_value)
        ):
            hook(info)

    logging.disable(logging.CRITICAL)
    sys.unraisablehook = drop_closed_loop
    try:
        yield
    finally:
        logging.disable(previous)
        sys.unraisablehook = hook


def check_out_folder(out: str | os.PathLike, flag: str = "--out", *, create: bool = True) -> Path:
    """Checks that files can be written in the output folder ``out`` (creating it, unless
    not ``create``: then its nearest existing parent is checked and nothing is left), so
    that a bad ``--out`` (a file, a read-only place) is one line before any work.

    Raises:
      NasjaxError: ``out`` or a parent is a file, or ``out`` cannot be created or written.
    """
    out = Path(out)
    place = out  # the nearest part of the path that exists
    while not place.exists() and place != place.parent:
        place = place.parent
    if place.exists() and not place.is_dir():
        raise NasjaxError(f"cannot use {out} as a folder: {place} is a file; choose another {flag}")
    try:
        if create:
            out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out if create else place):
            pass
    except OSError as err:
        raise NasjaxError(
            f"cannot write to folder {out}: {err.strerror or err}; choose another {flag}"
        ) from None
    return out


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Checks that the output file ``path`` can be written (an existing file is replaced at
    the end; nothing is created now), so that a bad ``--out`` is one line before any work.

    Raises:
      NasjaxError: ``path`` is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise NasjaxError(f"cannot write {path}: it is a folder; choose another {flag}")
    check_out_folder(path.parent, flag, create=False)
    return path


def _manager(out: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=MAX_TO_KEEP, enable_async_checkpointing=False
    )
    try:
        with _logging_off():  # absl ERROR lines about a damaged step's metadata
            return ocp.CheckpointManager((out / CHECKPOINT_DIR).resolve(), options=options)
    except Exception as err:  # e.g. OUT/checkpoints is a file
        raise NasjaxError(f"cannot open the checkpoints of {out}: {_short(err)}") from None


def _holds_sigint(method: Callable) -> Callable:
    """Runs ``method`` with Ctrl-C (SIGINT) held back until it returns, then delivered: a
    checkpoint or log write is never cut halfway (orbax's worker threads would print
    errors, and the folder would need the fallback). A no-op outside the main thread."""

    @functools.wraps(method)
    def held(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        caught: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
        try:
            return method(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)
            if caught:
                signal.raise_signal(signal.SIGINT)  # the previous handler, now

    return held


def _note(quiet: bool, line: str) -> None:
    if not quiet:
        print(line, file=sys.stderr, flush=True)


class RunDir:
    """A run folder opened by :meth:`open` (``out=None``: a run that keeps nothing).

    Use as a context manager, or call :meth:`close`. The loop restores its state with
    :meth:`restore`, writes records with :meth:`append` and checkpoints with :meth:`save`.
    """

    def __init__(
        self,
        out: Path | None,
        log_name: str,
        fingerprint: dict | None = None,
        *,
        check: bool = False,
        quiet: bool = False,
        unit: str = "step",
    ) -> None:
        """Use :meth:`open`; this stores its arguments and opens the checkpoints."""
        self.out = out
        self.unit = unit
        self.log_path = None if out is None else out / log_name
        self.fingerprint = fingerprint
        self.latest: int | None = None  # the newest checkpoint's step
        self.num_lines = 0  # lines in the log
        self._config_saved = False  # run_config.json written (or already there)
        self._check = check  # compare the config on resume
        self._quiet = quiet
        self._manager = None if out is None else _manager(out)

    @classmethod
    def open(
        cls,
        out: str | os.PathLike | None,
        config: dict | None,
        *,
        resume: bool,
        log_name: str,
        quiet: bool = False,
        unit: str = "step",
    ) -> RunDir:
        """Opens (creating) the run folder ``out`` for a run with settings ``config``.

        Args:
          out: the folder; ``None`` gives a run that keeps nothing (every method a no-op).
          config: every setting that changes the results (JSON-serialisable, flat: its
            keys are named as ``--flag-name`` in errors); ``None`` checks nothing.
          resume: continue the run in ``out``; without a checkpoint there, start anew
            (one note line on stderr).
          log_name: the JSONL log's file name, e.g. ``"results.jsonl"``.
          quiet: no note or warning lines.
          unit: what a step is (``"generation"``, ``"epoch"``), for the line of a run
            interrupted inside the ``with`` block (see :meth:`__exit__`).

        Raises:
          NasjaxError: ``out`` is not a writable folder; it holds a run and not
            ``resume``; or ``resume`` with a ``config`` that differs from the run's.
        """
        if out is None:
            return cls(None, log_name, unit=unit)
        out = Path(out)
        check_out_folder(out)
        fingerprint = {
            "config": json.loads(json.dumps(config or {})),  # as it reads back
            "nasjax_version": nasjax_version(),
        }
        run = cls(out, log_name, fingerprint, check=config is not None, quiet=quiet, unit=unit)
        try:
            with _logging_off():
                run.latest = run._manager.latest_step()
            if run.latest is not None and not resume:
                raise NasjaxError(
                    f"{out} already holds a run (checkpoint of step {run.latest}); pass "
                    "--resume to continue it or choose another --out"
                )
            if run.latest is None:
                if resume:
                    _note(quiet, f"note: {out} holds no checkpoint; starting a new run")
                run.truncate(0)  # whatever a run that died before its checkpoint left
            else:
                run._check_fingerprint()
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def check(cls, out: str | os.PathLike, config: dict | None, *, resume: bool) -> None:
        """The checks of :meth:`open`, silently, before a caller's slow set-up (data,
        latency tables), so that bad flags fail at once; the loop opens ``out`` later."""
        cls.open(out, config, resume=resume, log_name=".check", quiet=True).close()

    def _check_fingerprint(self) -> None:
        path = self.out / RUN_CONFIG_FILE
        if not path.exists():
            _note(self._quiet, f"note: {self.out} has no {RUN_CONFIG_FILE}; flags not checked")
            return
        try:
            saved = json.loads(path.read_text())
            old_config, version = saved["config"], saved["nasjax_version"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise NasjaxError(f"{path} is damaged ({_short(err)})") from None
        changes = _config_changes(old_config, self.fingerprint["config"]) if self._check else []
        if changes:
            raise NasjaxError(
                f"--resume of {self.out} with different flags ({'; '.join(changes)}); "
                "resume with the original flags or choose another --out"
            )
        if version != self.fingerprint["nasjax_version"]:
            _note(
                self._quiet,
                f"warning: {self.out} was started with nasjax {version}; this is "
                f"{self.fingerprint['nasjax_version']}",
            )
        self._config_saved = True

    def restore(self, target: Any) -> tuple[int, Any]:
        """``(step, tree)`` of the newest valid checkpoint (``(0, target)`` if none).

        Reads each checkpoint into the structure of ``target`` and checks its checksum.
        A damaged checkpoint is deleted with one warning line and the older one used;
        the log is cut to the lines written up to the restored checkpoint and checked.

        Raises:
          NasjaxError: every checkpoint is damaged, or the log is.
        """
        if self.out is None or self.latest is None:
            return 0, target
        damaged = []
        with _logging_off():
            steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                tree, num_lines = self._restore_step(step, target)
                break
            except Exception as err:  # orbax, TensorStore, JSON: all mean "damaged"
                damaged.append((step, _short(err)))
        else:
            reasons = "; ".join(f"step {s}: {r}" for s, r in damaged)
            raise NasjaxError(
                f"every checkpoint in {self.out / CHECKPOINT_DIR} is damaged ({reasons}); "
                "choose another --out"
            )
        for bad, reason in damaged:
            _note(
                self._quiet,
                f"warning: checkpoint {bad} in {self.out} is damaged ({reason}); "
                f"restored step {step}",
            )
        if damaged:  # so that saving step + 1 onwards does not meet them
            self._manager.close()
            for bad, _ in damaged:
                shutil.rmtree(self.out / CHECKPOINT_DIR / str(bad), ignore_errors=True)
            self._manager = _manager(self.out)
        self.latest = step
        self.truncate(num_lines)
        self.read_log()
        return step, tree

    def _restore_step(self, step: int, target: Any) -> tuple[Any, int]:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        )
        with _logging_off():
            restored = self._manager.restore(step, args=args)
        meta = restored["meta"]
        if tree_checksum(restored["state"]) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        state = jax.tree.map(_placed_like, restored["state"], target)
        return state, int(meta["num_lines"])

    @_holds_sigint
    def truncate(self, num_lines: int) -> None:
        """Keeps the first ``num_lines`` lines of the log (atomically).

        Raises:
          NasjaxError: the log has fewer lines (it was edited or lost).
        """
        if self.log_path is None:
            return
        lines = self.log_path.read_bytes().splitlines(True) if self.log_path.exists() else []
        if len(lines) < num_lines:
            raise NasjaxError(
                f"{self.log_path} has {len(lines)} lines but its checkpoint {self.latest} "
                f"expects {num_lines}; the log was edited or lost, choose another --out"
            )
        if len(lines) > num_lines:
            fd, tmp = tempfile.mkstemp(dir=self.out, prefix=f".{self.log_path.name}.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.writelines(lines[:num_lines])
                os.replace(tmp, self.log_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.num_lines = num_lines

    def read_log(self) -> list[dict]:
        """The log's records, one per line.

        Raises:
          NasjaxError: a line is not a JSON object (named by its number).
        """
        if self.log_path is None or not self.log_path.exists():
            return []
        records = []
        for number, line in enumerate(self.log_path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise NasjaxError(
                    f"{self.log_path} line {number} is not valid JSON: {line[:60].strip()}"
                )
            records.append(record)
        return records

    @_holds_sigint
    def append(self, records: list[dict]) -> None:
        """Appends one JSON line per record to the log."""
        if self.log_path is None:
            return
        with self.log_path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self.num_lines += len(records)

    @_holds_sigint
    def save(self, step: int, tree: Any) -> None:
        """Checkpoints ``tree`` as ``step``, with the log's line count and a checksum;
        the first save also writes ``run_config.json`` (the run's settings)."""
        if self.out is None:
            return
        if not self._config_saved:
            write_json_atomic(self.out / RUN_CONFIG_FILE, self.fingerprint)
            self._config_saved = True
        meta = {"num_lines": self.num_lines, "sha256": tree_checksum(tree)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args)
        self.latest = step

    @_holds_sigint
    def close(self) -> None:
        """Waits for the checkpoint writes and closes the manager (idempotent)."""
        if self._manager is not None:
            manager, self._manager = self._manager, None
            manager.wait_until_finished()
            manager.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        """Closes; a ``KeyboardInterrupt`` (Ctrl-C) inside the block becomes
        :class:`~nasjax.errors.Interrupted`, whose one line says where the run stopped and
        that ``--resume`` continues it (the checkpoints written so far are kept)."""
        self.close()
        interrupted = isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted)
        if interrupted and self.out is not None:
            done = self.latest or 0
            raise Interrupted(
                f"interrupted at {self.unit} {done + 1} ({done} saved in {self.out}); "
                "resume with --resume"
            ) from None


def _placed_like(restored: Any, target: Any) -> Any:
    """``restored`` uncommitted where ``target`` is: orbax commits every restored array to
    a device, and jit keys its programs on that (a resumed run would compile its step
    again, as another program, where the run it continues had compiled it)."""
    if not (isinstance(target, jax.Array) and isinstance(restored, jax.Array)):
        return restored
    if target.committed or not restored.is_fully_addressable:
        return restored
    if jax.dtypes.issubdtype(restored.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(restored))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(restored))
    return jax.numpy.asarray(np.asarray(restored))
