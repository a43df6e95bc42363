"""Your own classification data: arrays (or an ``.npz`` file of them) checked before use.

:meth:`nasjax.data.Dataset.from_arrays` and ``--dataset path/to/file.npz`` go through
here. The arrays are ``x_train, y_train, x_test, y_test`` and optionally ``x_valid,
y_valid`` (both or neither) and a scalar ``num_classes``: inputs are 1D signals
``[N, length, channels]`` or images ``[N, height, width, channels]`` (channels last) of any
real dtype, finite; labels are integers in ``0..num_classes-1`` (``num_classes`` defaults to
the largest label + 1). Each problem is one :class:`~nasjax.errors.NasjaxError` line
naming the array, what it holds and what is expected.

Foundation-level: imports only :mod:`nasjax.errors` and numpy.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nasjax.errors import NasjaxError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_valid", "y_valid", "num_classes")
SPLITS = ("train", "valid", "test")
_SHAPES = "[N, length, channels] (1D signals) or [N, height, width, channels] (images)"


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``np.savez``), by name; nothing pickled is read.

    Raises:
      NasjaxError: the file is missing, is not a complete ``.npz`` archive, holds an
        object array, lacks a required array or holds an array of another name.
    """
    where = f"dataset file {str(path)!r}"
    if not Path(path).is_file():
        raise NasjaxError(f"{where} does not exist (expected an .npz file from numpy.savez)")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except unreadable as err:
        raise NasjaxError(f"{where} is not an .npz archive (numpy.savez): {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise NasjaxError(f"{where} holds one array, not an .npz archive of named arrays")
    with archive:
        names = list(archive.files)
        missing = [k for k in REQUIRED if k not in names]
        unknown = [k for k in names if k not in REQUIRED + OPTIONAL]
        if missing or unknown:
            problem = f"lacks {', '.join(missing)}" if missing else f"has {', '.join(unknown)}"
            raise NasjaxError(
                f"{where} {problem}; expected arrays {', '.join(REQUIRED)} "
                f"(and optionally {', '.join(OPTIONAL)}); it holds {', '.join(names) or 'none'}"
            )
        arrays = {}
        for name in names:
            try:
                arrays[name] = archive[name]
            except unreadable as err:
                raise NasjaxError(
                    f"{where}: cannot read array {name!r} (truncated file, or Python objects "
                    f"that need pickle): {err}"
                ) from None
    return arrays


def _check_x(name: str, x: np.ndarray, example: tuple[int, ...] | None) -> None:
    if x.dtype.kind not in "fiu":
        raise NasjaxError(f"{name} has dtype {x.dtype}; expected real numbers (float or int)")
    if x.ndim not in (3, 4):
        raise NasjaxError(f"{name} has shape {x.shape}; expected {_SHAPES}")
    if len(x) == 0:
        raise NasjaxError(f"{name} holds no examples")
    if example is not None and x.shape[1:] != example:
        raise NasjaxError(f"{name} examples have shape {x.shape[1:]}, but x_train's have {example}")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NasjaxError(
                f"{name} holds {int(bad.sum())} NaN or infinite values (first at index "
                f"{first}); inputs must be finite"
            )


def _check_y(name: str, y: np.ndarray, num_examples: int, x_name: str) -> None:
    if y.dtype.kind not in "iu":
        raise NasjaxError(f"{name} has dtype {y.dtype}; expected integer class labels")
    if y.shape != (num_examples,):
        raise NasjaxError(
            f"{name} has shape {y.shape}; expected ({num_examples},), one label per example "
            f"of {x_name}"
        )
    if num_examples and y.min() < 0:
        raise NasjaxError(f"{name} holds negative labels (min {y.min()}); labels start at 0")


def _num_classes(labels: dict[str, np.ndarray], num_classes: object) -> int:
    largest = max(int(y.max()) for y in labels.values() if len(y))
    if num_classes is None:
        if largest < 1:
            raise NasjaxError("the labels hold one class (all 0); a classifier needs 2 or more")
        return largest + 1
    given = np.asarray(num_classes)
    if given.ndim != 0 or given.dtype.kind not in "iu" or int(given) < 2:
        raise NasjaxError(f"num_classes must be one integer >= 2; got {num_classes!r}")
    for name, y in labels.items():
        if len(y) and int(y.max()) >= int(given):
            raise NasjaxError(
                f"{name} holds label {int(y.max())}, out of range for num_classes={int(given)} "
                f"(labels must lie in 0..{int(given) - 1})"
            )
    return int(given)


def check_arrays(
    arrays: dict[str, np.ndarray | None], num_classes: object = None
) -> tuple[dict[str, np.ndarray], int]:
    """Checks the splits of a dataset and returns them (as numpy arrays) and the class count.

    Args:
      arrays: ``x_train, y_train, x_test, y_test`` and optionally ``x_valid, y_valid``
        (``None`` or absent: carved out of train later).
      num_classes: the number of classes; ``None``: the largest label + 1.

    Raises:
      NasjaxError: one line for the first problem found (see the module docstring).
    """
    given = {k: v for k, v in arrays.items() if v is not None}
    if ("x_valid" in given) != ("y_valid" in given):
        raise NasjaxError("give x_valid and y_valid together (or neither: valid is split off)")
    out = {k: np.asarray(v) for k, v in given.items()}
    example = None
    for split in SPLITS:
        if f"x_{split}" not in out:
            continue
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        _check_x(f"x_{split}", x, example)
        example = x.shape[1:] if example is None else example
        _check_y(f"y_{split}", y, len(x), f"x_{split}")
    labels = {k: v for k, v in out.items() if k.startswith("y_")}
    return out, _num_classes(labels, num_classes)
