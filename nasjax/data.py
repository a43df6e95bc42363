"""Datasets as plain arrays, small enough to live whole on the device during training.

Every loader returns a :class:`Dataset` of numpy arrays: inputs ``float32`` in
channels-last layout, labels ``int32``, with train / valid / test splits. Nothing is
downloaded at run time.

- MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439): generated
  locally by the ``mnist1d`` package; 4,000 train / 1,000 test signals of length 40.
- scikit-learn's bundled 8x8 handwritten digits: a tiny 2D image set (1,797 images).
- CIFAR-10 / CIFAR-100 (Krizhevsky 2009, "Learning multiple layers of features from tiny
  images"): read from the standard python folders ``cifar-10-batches-py`` and
  ``cifar-100-python`` at a user path (``data_dir`` or the ``NASJAX_CIFAR_DIR``
  environment variable).

The valid split is always carved out of the train split with a
``np.random.default_rng(seed)`` permutation, so the same seed gives identical arrays.
Minibatches are drawn on device with :func:`batch_indices`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.tasks import TASKS, Task, get_task
from nasjax.user_data import check_arrays, read_npz

CIFAR_ENV_VAR = "NASJAX_CIFAR_DIR"
"""Environment variable naming the CIFAR folder (or its parent) when ``data_dir`` is None."""

_DIGITS_TEST_FRACTION = 0.2


class Dataset(NamedTuple):
    """Train / valid / test splits of one dataset, as numpy arrays.

    Inputs are ``float32`` in channels-last layout (``[N, 40, 1]`` for MNIST-1D,
    ``[N, 8, 8, 1]`` for digits, ``[N, 32, 32, 3]`` for CIFAR); labels are ``int32``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, channels last, e.g. ``(40, 1)`` or ``(32, 32, 3)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions: 1 for signals, 2 for images."""
        return len(self.input_shape) - 1

    @property
    def task(self) -> Task:
        """What a classifier for this data looks like (what spaces build networks for)."""
        return Task(self.input_shape, int(self.num_classes))

    @classmethod
    def from_arrays(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        *,
        num_classes: int | None = None,
        name: str = "arrays",
        seed: int = 0,
        valid_fraction: float = 0.1,
    ) -> Dataset:
        """A dataset of your own arrays, checked (:mod:`nasjax.user_data`), used as given.

        Inputs are ``[N, length, channels]`` signals or ``[N, height, width, channels]``
        images of any real dtype (cast to ``float32``, not normalised), labels integers in
        ``0..num_classes-1``. Without ``x_valid``/``y_valid``, valid is carved out of train
        as the built-in loaders do (``valid_fraction``, ``np.random.default_rng(seed)``).

        Raises:
          NasjaxError: one line naming the bad array (dtype, shape, labels, NaN/inf).
        """
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        arrays.update(x_valid=x_valid, y_valid=y_valid)
        a, num_classes = check_arrays(arrays, num_classes)
        if "x_valid" not in a:
            split = _make_dataset(
                a["x_train"], a["y_train"], a["x_test"], a["y_test"], seed=seed,
                valid_fraction=valid_fraction, num_classes=num_classes, name=name,
            )  # fmt: skip
            if len(split.y_valid) == 0:
                raise NasjaxError(
                    f"valid_fraction={valid_fraction} of {len(a['y_train'])} training examples "
                    "leaves no valid example; give x_valid and y_valid or a larger fraction"
                )
            return split
        f32 = lambda k: np.ascontiguousarray(a[k], dtype=np.float32)
        i32 = lambda k: np.ascontiguousarray(a[k], dtype=np.int32)
        return cls(
            f32("x_train"), i32("y_train"), f32("x_valid"), i32("y_valid"), f32("x_test"),
            i32("y_test"), num_classes=num_classes, name=name,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Splitting and normalisation helpers
# ---------------------------------------------------------------------------------------


def _check_valid_fraction(valid_fraction: float) -> None:
    if not 0.0 <= valid_fraction < 1.0:
        raise NasjaxError(f"valid_fraction must be in [0, 1); got {valid_fraction!r}")


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Randomly split ``range(n)`` into (rest, held out), held out ``round(fraction*n)``.

    Both index arrays are sorted, so the kept examples stay in their original order.
    """
    perm = rng.permutation(n)
    n_held = int(round(fraction * n))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def _make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int | np.random.SeedSequence,
    valid_fraction: float,
    num_classes: int,
    name: str,
    normalise: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> Dataset:
    """Carve valid out of (x, y), normalise all splits with train statistics, cast."""
    _check_valid_fraction(valid_fraction)
    rng = np.random.default_rng(seed)
    train_idx, valid_idx = _split(len(y), valid_fraction, rng)
    x_train, x_valid = x[train_idx], x[valid_idx]
    if normalise is not None:
        mean, std = normalise(x_train)
        x_train, x_valid, x_test = ((a - mean) / std for a in (x_train, x_valid, x_test))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)
    return Dataset(
        x_train=f32(x_train),
        y_train=i32(y[train_idx]),
        x_valid=f32(x_valid),
        y_valid=i32(y[valid_idx]),
        x_test=f32(x_test),
        y_test=i32(y_test),
        num_classes=num_classes,
        name=name,
    )


def _stats(axes: tuple[int, ...]) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Mean and std over ``axes`` (float64 accumulation), std floored away from zero."""

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)
        std = x.std(axis=axes, dtype=np.float64, keepdims=True)
        return mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32)

    return stats


# ---------------------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist1d_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate MNIST-1D locally (never the download path); cached for the process.

    ``mnist1d`` seeds the global ``random`` and ``np.random`` generators; their states
    are restored afterwards so that loading data has no side effects.
    """
    import mnist1d.data

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (
        np.asarray(raw["x"], np.float32)[..., None],
        np.asarray(raw["y"], np.int32),
        np.asarray(raw["x_test"], np.float32)[..., None],
        np.asarray(raw["y_test"], np.int32),
    )
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_mnist1d(
    seed: int = 0, *, valid_fraction: float = 0.1, data_dir: str | None = None
) -> Dataset:
    """MNIST-1D (Greydanus 2020): signals ``[N, 40, 1]``, 10 classes.

    The official 1,000-example test set is kept as test; valid is carved out of the
    4,000 train examples. The generated data already has mean ~0 and std ~1 and is
    left as is.

    Args:
      seed: seed of the train/valid split.
      valid_fraction: fraction of the train split held out as valid.
      data_dir: unused (the data is generated locally).

    Returns:
      The dataset.
    """
    del data_dir
    x, y, x_test, y_test = _mnist1d_raw()
    return _make_dataset(
        x,
        y,
        x_test,
        y_test,
        seed=seed,
        valid_fraction=valid_fraction,
        num_classes=10,
        name="mnist1d",
    )


# ---------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------


def load_digits(
    seed: int = 0, *, valid_fraction: float = 0.1, data_dir: str | None = None
) -> Dataset:
    """scikit-learn's bundled 8x8 digits: images ``[N, 8, 8, 1]``, 10 classes.

    20% of the 1,797 images are held out as test and ``valid_fraction`` of the rest as
    valid, both from ``seed``. Pixels are scaled from 0..16 to [0, 1], then standardised
    with the train split's mean and std.

    Args:
      seed: seed of the test and valid splits.
      valid_fraction: fraction of the non-test examples held out as valid.
      data_dir: unused (the data ships with scikit-learn).

    Returns:
      The dataset.
    """
    del data_dir
    import sklearn.datasets

    _check_valid_fraction(valid_fraction)
    bunch = sklearn.datasets.load_digits()
    x = np.asarray(bunch.images, np.float32)[..., None] / 16.0
    y = np.asarray(bunch.target, np.int32)
    # Two independent streams from one seed: the test split, then the valid split.
    test_seed, valid_seed = np.random.SeedSequence(seed).spawn(2)
    rest_idx, test_idx = _split(len(y), _DIGITS_TEST_FRACTION, np.random.default_rng(test_seed))
    return _make_dataset(
        x[rest_idx], y[rest_idx], x[test_idx], y[test_idx],
        seed=valid_seed, valid_fraction=valid_fraction, num_classes=10, name="digits",
        normalise=_stats((0, 1, 2, 3)),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ---------------------------------------------------------------------------------------

_CIFAR = {
    # kind: (folder name, train files, test files, label key, num classes, pretty name)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        "CIFAR-10",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR-100"),
}


def _cifar_folder(kind: str, data_dir: str | None) -> Path:
    """The folder holding the CIFAR files: ``data_dir`` (or env var) itself or its child."""
    folder, train_files, test_files, _, _, pretty = _CIFAR[kind]
    how = (
        f"download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and "
        f"point at the '{folder}' folder (or its parent) with --data-dir or the "
        f"{CIFAR_ENV_VAR} environment variable"
    )
    root = data_dir if data_dir is not None else os.environ.get(CIFAR_ENV_VAR) or None
    if root is None:
        raise NasjaxError(f"no {pretty} folder given ({CIFAR_ENV_VAR} is not set); {how}")
    root_path = Path(root).expanduser()
    needed = train_files + test_files
    for candidate in (root_path, root_path / folder):
        if all((candidate / f).is_file() for f in needed):
            return candidate
    raise NasjaxError(
        f"{pretty} files ({', '.join(needed)}) not found in {root_path} "
        f"nor in {root_path / folder}; {how}"
    )


def _read_cifar_files(
    folder: Path, files: tuple[str, ...], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read pickled CIFAR batches into uint8 NHWC images and int32 labels."""
    xs, ys = [], []
    for name in files:
        path = folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = batch[b"data"] if b"data" in batch else batch["data"]
            labels = batch[label_key.encode()] if label_key.encode() in batch else batch[label_key]
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
            raise NasjaxError(
                f"cannot read CIFAR file {path} (expected a pickled dict with 'data' and "
                f"'{label_key}'): {type(e).__name__}: {e}"
            ) from e
        data = np.asarray(data, np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise NasjaxError(
                f"CIFAR file {path}: 'data' has shape {data.shape}, expected [N, 3072]"
            )
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(labels, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def _load_cifar(kind: str, seed: int, valid_fraction: float, data_dir: str | None) -> Dataset:
    _check_valid_fraction(valid_fraction)
    folder = _cifar_folder(kind, data_dir)
    _, train_files, test_files, label_key, num_classes, _ = _CIFAR[kind]
    x, y = _read_cifar_files(folder, train_files, label_key)
    x_test, y_test = _read_cifar_files(folder, test_files, label_key)
    scale = lambda a: a.astype(np.float32) / np.float32(255.0)
    return _make_dataset(
        scale(x), y, scale(x_test), y_test, seed=seed, valid_fraction=valid_fraction,
        num_classes=num_classes, name=kind, normalise=_stats((0, 1, 2)),
    )  # fmt: skip


def load_cifar10(
    seed: int = 0, *, valid_fraction: float = 0.1, data_dir: str | None = None
) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from a ``cifar-10-batches-py`` folder: ``[N, 32, 32, 3]``.

    Pixels are scaled to [0, 1] and normalised per channel with the train split's mean
    and std; valid is carved out of the 50,000 train images.

    Args:
      seed: seed of the train/valid split.
      valid_fraction: fraction of the train split held out as valid.
      data_dir: the ``cifar-10-batches-py`` folder or its parent; ``None`` reads the
        ``NASJAX_CIFAR_DIR`` environment variable.

    Returns:
      The dataset.

    Raises:
      NasjaxError: no folder given, or the files are missing or unreadable.
    """
    return _load_cifar("cifar10", seed, valid_fraction, data_dir)


def load_cifar100(
    seed: int = 0, *, valid_fraction: float = 0.1, data_dir: str | None = None
) -> Dataset:
    """CIFAR-100 (Krizhevsky 2009) from a ``cifar-100-python`` folder, 100 fine labels.

    Same layout and normalisation as :func:`load_cifar10`.

    Args:
      seed: seed of the train/valid split.
      valid_fraction: fraction of the train split held out as valid.
      data_dir: the ``cifar-100-python`` folder or its parent; ``None`` reads the
        ``NASJAX_CIFAR_DIR`` environment variable.

    Returns:
      The dataset.

    Raises:
      NasjaxError: no folder given, or the files are missing or unreadable.
    """
    return _load_cifar("cifar100", seed, valid_fraction, data_dir)


# ---------------------------------------------------------------------------------------
# Registry and entry point
# ---------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}
"""Dataset name -> loader ``(seed, *, valid_fraction, data_dir) -> Dataset``."""


def load_dataset(
    name: str, seed: int = 0, *, valid_fraction: float = 0.1, data_dir: str | None = None
) -> Dataset:
    """Load a dataset by name, or your own from an ``.npz`` file; deterministic given ``seed``.

    Args:
      name: one of ``DATASETS`` (``"mnist1d"``, ``"digits"``, ``"cifar10"``,
        ``"cifar100"``), or a path to an ``.npz`` file (:func:`load_npz`).
      seed: seed of the splits (the valid split is a permutation of the train split).
      valid_fraction: fraction of the train split held out as valid, in [0, 1).
      data_dir: for CIFAR, the dataset folder or its parent (default: the
        ``NASJAX_CIFAR_DIR`` environment variable); ignored by the other datasets.

    Returns:
      The dataset, as numpy arrays.

    Raises:
      NasjaxError: unknown name, bad ``valid_fraction``, or missing data files.
    """
    if is_dataset_file(name):
        return load_npz(name, seed, valid_fraction=valid_fraction)
    if name not in DATASETS:
        raise NasjaxError(
            f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}, or a path to an "
            ".npz file of your own arrays"
        )
    return DATASETS[name](seed, valid_fraction=valid_fraction, data_dir=data_dir)


def is_dataset_file(name: str) -> bool:
    """Whether a dataset name is a path to a file of your own (``*.npz``, or any name with a
    path separator) rather than a built-in name: the one place that tells them apart."""
    return name.endswith(".npz") or os.sep in name or "/" in name


def dataset_identity(name: str) -> dict[str, str]:
    """What names a dataset in a run's settings (compared on ``--resume``): a built-in
    name, or a file's path and the SHA-256 of its bytes, so that resuming on a file that
    changed since is refused rather than mixing two datasets' results."""
    if not is_dataset_file(name) or not os.path.isfile(name):
        return {"dataset": name}
    digest = hashlib.sha256()
    with open(name, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"dataset": name, "dataset_sha256": digest.hexdigest()}


def load_npz(path: str | os.PathLike, seed: int = 0, *, valid_fraction: float = 0.1) -> Dataset:
    """Your own dataset from an ``.npz`` file (``numpy.savez``) of the arrays of
    :meth:`Dataset.from_arrays` (names ``x_train, y_train, x_test, y_test``, optionally
    ``x_valid, y_valid`` and a scalar ``num_classes``), checked; named by the path.

    Raises:
      NasjaxError: one line for an unreadable file or a bad array (:mod:`nasjax.user_data`).
    """
    arrays = read_npz(path)
    num_classes = arrays.pop("num_classes", None)
    try:
        return Dataset.from_arrays(
            **arrays, num_classes=num_classes, name=str(path), seed=seed,
            valid_fraction=valid_fraction,
        )  # fmt: skip
    except NasjaxError as err:
        raise NasjaxError(f"dataset file {str(path)!r}: {err}") from None


def dataset_task(name: str, choices: tuple[str, ...] | None = None) -> Task:
    """The :class:`~nasjax.tasks.Task` of a dataset name (one of ``choices``, default every
    task of ``nasjax.tasks.TASKS``) or of an ``.npz`` file (read and checked whole).

    What the spaces build networks and count costs for (their ``dataset`` argument).
    """
    if is_dataset_file(name):
        return load_npz(name).task
    choices = tuple(TASKS) if choices is None else choices
    if name not in choices:
        raise NasjaxError(
            f"unknown dataset {name!r}; valid choices: {', '.join(choices)}, or a path to an "
            ".npz file of your own arrays"
        )
    return get_task(name)


# ---------------------------------------------------------------------------------------
# Minibatches on device
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size", "num_steps"))
def batch_indices(key: jax.Array, num_examples: int, batch_size: int, num_steps: int) -> jax.Array:
    """Minibatch indices for ``num_steps`` steps, epoch after epoch.

    Each epoch is a fresh random permutation of ``range(num_examples)`` cut into
    ``num_examples // batch_size`` full batches; the incomplete last batch is dropped.
    Pure ``jax.numpy`` and already jitted, with ``num_examples``, ``batch_size`` and
    ``num_steps`` static; it can also be traced inside a larger ``jit``.

    Args:
      key: PRNG key.
      num_examples: size of the training set.
      batch_size: examples per step, at most ``num_examples``.
      num_steps: number of steps (may span several epochs, or part of one).

    Returns:
      ``int32[num_steps, batch_size]`` indices into the training set.

    Raises:
      NasjaxError: ``batch_size`` is not in ``1..num_examples`` or ``num_steps < 0``.
    """
    if not 1 <= batch_size <= num_examples:
        raise NasjaxError(
            f"batch_size must be between 1 and the number of examples ({num_examples}); "
            f"got {batch_size}"
        )
    if num_steps < 0:
        raise NasjaxError(f"num_steps must be >= 0; got {num_steps}")
    steps_per_epoch = num_examples // batch_size
    num_epochs = max(1, -(-num_steps // steps_per_epoch))
    keys = jax.random.split(key, num_epochs)
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys)
    perms = perms[:, : steps_per_epoch * batch_size].reshape(-1, batch_size)
    return perms[:num_steps].astype(jnp.int32)
