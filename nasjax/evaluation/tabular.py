"""NAS-Bench-201 as a lookup table: the benchmark's columns as arrays indexed by genotype code.

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained all 15,625 cells of its space; a search
over it is a sequence of table look-ups charged a *simulated* training time. This module
reads the project's compact table, shipped as package data (:data:`DEFAULT_PATH`,
``nasjax/evaluation/data/nb201/nb201.csv.gz``; its README gives columns, provenance and
licences), into arrays indexed by the genotype's dense code ``NB201Space().to_index(g)``
and runs the black-box protocol of the paper's Table 5 entirely in JAX:

* the reward of a query is the 12-epoch validation accuracy (``hp=12``),
* each query costs the 12-epoch training time ``c10valid_train_time_s_200ep * 12 / 200``,
* the search stops when the simulated budget (12,000 s) runs out: a query counts only if
  the clock after paying its cost is still ``<= budget``,
* the result is the 200-epoch test accuracy of the best-reward architecture.

The search itself, a ``lax.scan`` of ask/tell steps over these arrays, is
:mod:`nasjax.search.tabular`. Accuracies are percentages and are MAXIMISED.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice
from nasjax.spaces.nb201 import NB201Space

DATASETS = ("cifar10", "cifar100", "imagenet16")
REWARD_COLUMNS = {
    "cifar10": "c10valid_valid_12ep",
    "cifar100": "c100_valid_12ep",
    "imagenet16": "in16_valid_12ep",
}
TEST_COLUMNS = {
    "cifar10": "c10_test_200ep",
    "cifar100": "c100_test_200ep",
    "imagenet16": "in16_test_200ep",
}
TIME_COLUMN = "c10valid_train_time_s_200ep"
COST_EPOCHS = 12  # each query is charged the time of 12 of the 200 epochs
ENV_VAR = "NASJAX_NB201"
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "nb201" / "nb201.csv.gz"
"""The table that ships with nasjax (package data, in a clone and in an installed wheel)."""


class NB201Table(NamedTuple):
    """NAS-Bench-201 columns, row ``i`` = the genotype with dense code ``i``.

    Attributes:
      reward: ``float32[3, 15625]``, 12-epoch validation accuracy (%) per dataset in
        ``DATASETS`` order (the search reward, maximised).
      test: ``float32[3, 15625]``, 200-epoch test accuracy (%) per dataset.
      cost: ``float32[15625]``, simulated seconds per query (12 epochs of training).
      official_index: ``int32[15625]``, the benchmark's own index of each row.
    """

    reward: jax.Array
    test: jax.Array
    cost: jax.Array
    official_index: jax.Array

    def arrays(self, dataset: str) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(reward, test, cost)`` rows of ``dataset`` (one of ``DATASETS``)."""
        check_choice("dataset", dataset, DATASETS)
        d = DATASETS.index(dataset)
        return self.reward[d], self.test[d], self.cost

    @property
    def min_cost(self) -> float:
        """Cheapest query in simulated seconds (host float)."""
        return float(np.min(np.asarray(self.cost)))


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    """The table's path: ``path``, else ``$NASJAX_NB201``, else :data:`DEFAULT_PATH`."""
    if path is not None:
        return Path(path)
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else DEFAULT_PATH


def _damage(err: Exception) -> str:
    """Why a table file cannot be read, in a few words."""
    if isinstance(err, EOFError):
        return "truncated (the compressed data ends early)"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.object[err.start]:#04x})"
    if isinstance(err, zlib.error):
        return f"corrupt compressed data ({err})"
    if isinstance(err, csv.Error):
        return f"not a CSV table ({err})"
    if isinstance(err, gzip.BadGzipFile):
        text = str(err)
        return "not a gzip file" if text.startswith("Not a gzipped file") else text
    return f"unreadable ({getattr(err, 'strerror', None) or err})"


@contextlib.contextmanager
def _open_table(file: Path) -> Iterator[Iterator[list[str]]]:
    """A ``csv.reader`` over the gzipped table ``file``; a damaged file (truncated, bad CRC,
    not gzip, not UTF-8) is one :class:`NasjaxError` naming the file and the reason."""
    try:
        with gzip.open(file, "rt", newline="", encoding="utf-8") as f:
            yield csv.reader(f)
    except (EOFError, OSError, UnicodeDecodeError, zlib.error, csv.Error) as err:
        raise NasjaxError(
            f"NAS-Bench-201 table {str(file)!r} is damaged: {_damage(err)}; nasjax ships a "
            f"copy at {DEFAULT_PATH} (reinstall if that one is damaged), or pass another "
            "with --nb201"
        ) from None


def _read_columns(file: Path, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(official_index int[N], values float64[N, len(columns)])`` in dense-code order.

    Checks the file exists, has the columns, 15,625 rows and covers the space.
    """
    if not file.is_file():
        raise NasjaxError(
            f"NAS-Bench-201 table not found at {str(file)!r}; pass its path with --nb201 "
            f"PATH or set the {ENV_VAR} environment variable (default path: {DEFAULT_PATH})"
        )
    with _open_table(file) as reader:
        header = next(reader, [])
        missing = [c for c in ["index", "arch_str", *columns] if c not in header]
        if missing:
            raise NasjaxError(
                f"NAS-Bench-201 table {str(file)!r} lacks columns: {missing}; "
                f"valid columns: {', '.join(header[2:])}"
            )
        lines = [r for r in reader if r]
    short = next((n for n, r in enumerate(lines, 2) if len(r) != len(header)), None)
    if short is not None:
        raise NasjaxError(
            f"NAS-Bench-201 table {str(file)!r} line {short} has {len(lines[short - 2])} "
            f"fields, expected {len(header)}"
        )
    wanted = [header.index(c) for c in ["index", "arch_str", *columns]]
    rows = [[r[i] for i in wanted] for r in lines]
    space = NB201Space()
    if len(rows) != space.size:
        raise NasjaxError(
            f"NAS-Bench-201 table {str(file)!r} has {len(rows)} rows, expected {space.size}"
        )
    genotypes = np.stack([space.from_string(r[1]) for r in rows]).astype(np.int64)
    strides = np.cumprod((1,) + space.num_choices[:0:-1])[::-1]  # as in ``to_index``
    codes = genotypes @ strides
    seen = np.zeros(space.size, bool)
    seen[codes] = True
    if not seen.all():
        absent = [space.to_string(space.from_index(c)) for c in np.flatnonzero(~seen)[:3]]
        raise NasjaxError(
            f"NAS-Bench-201 table {str(file)!r} does not cover the space: "
            f"{int((~seen).sum())} cells missing, e.g. {absent}"
        )
    try:
        values = np.array([[float(v) for v in r[2:]] for r in rows], np.float64)
    except ValueError as e:
        raise NasjaxError(f"NAS-Bench-201 table {str(file)!r}: non-numeric value ({e})") from None
    order = np.argsort(codes)  # row of each dense code
    official = np.array([int(r[0]) for r in rows])[order]
    return official, values.reshape(len(rows), len(columns))[order]


def load_nb201(path: str | os.PathLike | None = None) -> NB201Table:
    """Reads the compact NAS-Bench-201 CSV into an :class:`NB201Table`.

    Args:
      path: the ``nb201.csv.gz`` file; if ``None``, the ``NASJAX_NB201`` environment
        variable, else the packaged copy :data:`DEFAULT_PATH`.

    Raises:
      NasjaxError: if the file is missing (naming the ``--nb201`` flag, the
        ``NASJAX_NB201`` variable and the default path), lacks columns, has a row count
        other than 15,625, or its arch strings do not cover the space.
    """
    columns = [TIME_COLUMN]
    columns += [REWARD_COLUMNS[d] for d in DATASETS] + [TEST_COLUMNS[d] for d in DATASETS]
    official, values = _read_columns(resolve_path(path), columns)
    return NB201Table(
        reward=jnp.asarray(values[:, 1:4].T, jnp.float32),
        test=jnp.asarray(values[:, 4:7].T, jnp.float32),
        cost=jnp.asarray(values[:, 0] * COST_EPOCHS / 200, jnp.float32),
        official_index=jnp.asarray(official, jnp.int32),
    )


def load_nb201_columns(
    columns: Sequence[str], path: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Any columns of the table (e.g. ``lat_pixel3``, ``c10_test_200ep``) as ``float64[15625]``.

    Row ``i`` is the genotype with dense code ``i``, as in :class:`NB201Table`.

    Raises:
      NasjaxError: for a missing file or an unknown column (naming the valid ones).
    """
    _, values = _read_columns(resolve_path(path), list(columns))
    return {name: values[:, i] for i, name in enumerate(columns)}


def latency_columns(path: str | os.PathLike | None = None) -> list[str]:
    """The table's measured-latency columns ``lat_<device>[_<batch>]``."""
    file = resolve_path(path)
    if not file.is_file():
        _read_columns(file, [])  # raises the missing-file error
    with _open_table(file) as reader:
        header = next(reader, [])
    return [c for c in header if c.startswith("lat_")]
