"""Tests for nasjax.data: loaders, splits, CIFAR reader on a tiny folder, batch indices."""

import pickle

import chex
import jax
import numpy as np
import pytest

from nasjax import data
from nasjax.errors import NasjaxError

# ------------------------------------------------------------------ helpers


def _check_dataset(ds, name, input_shape, num_classes, ndim):
    assert ds.name == name
    assert ds.num_classes == num_classes
    assert ds.input_shape == input_shape
    assert ds.ndim == ndim
    for x, y in ((ds.x_train, ds.y_train), (ds.x_valid, ds.y_valid), (ds.x_test, ds.y_test)):
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == input_shape
        chex.assert_equal_shape_prefix([x, y], 1)
        assert np.all(np.isfinite(x))
        assert np.all((y >= 0) & (y < num_classes))


def _assert_datasets_equal(a, b):
    for field in ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def _rows(x):
    """Set of examples as hashable byte strings."""
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def _write_cifar(root, kind, n_train=20, n_test=10, seed=0):
    """Write a tiny CIFAR folder in the standard python format; return NHWC uint8 arrays."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if kind == "cifar10" else 100
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, num_classes, n_train)
    y_test = rng.integers(0, num_classes, n_test)
    flat = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # rows are CHW

    def dump(path, x, y):
        if kind == "cifar10":
            d = {b"data": flat(x), b"labels": [int(v) for v in y], b"batch_label": b"b"}
        else:
            d = {
                b"data": flat(x),
                b"fine_labels": [int(v) for v in y],
                b"coarse_labels": [0] * len(y),
            }
        with open(path, "wb") as f:
            pickle.dump(d, f)

    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, idx in enumerate(np.array_split(np.arange(n_train), 5)):
            dump(folder / f"data_batch_{i + 1}", x_train[idx], y_train[idx])
        dump(folder / "test_batch", x_test, y_test)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        dump(folder / "train", x_train, y_train)
        dump(folder / "test", x_test, y_test)
    return folder, x_train, y_train, x_test, y_test


# ------------------------------------------------------------------ MNIST-1D and digits


def test_mnist1d_leaves_global_rng_alone():
    # First in the file so that the generation here fills the cache for the others.
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data._mnist1d_raw.cache_clear()
    data.load_mnist1d(seed=0)
    assert np.random.rand() == expected


def test_mnist1d_shapes_and_sizes():
    ds = data.load_dataset("mnist1d", seed=0)
    _check_dataset(ds, "mnist1d", (40, 1), 10, ndim=1)
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (3600, 400, 1000)
    assert abs(float(ds.x_train.std()) - 1.0) < 0.1


def test_mnist1d_deterministic_and_split_by_seed():
    a = data.load_dataset("mnist1d", seed=0)
    b = data.load_dataset("mnist1d", seed=0)
    c = data.load_dataset("mnist1d", seed=1)
    _assert_datasets_equal(a, b)
    assert not np.array_equal(a.y_valid, c.y_valid) or not np.array_equal(a.x_valid, c.x_valid)
    # Test set is the official one, independent of seed; train+valid are the same pool.
    np.testing.assert_array_equal(a.x_test, c.x_test)
    assert _rows(a.x_train) | _rows(a.x_valid) == _rows(c.x_train) | _rows(c.x_valid)


def test_mnist1d_splits_disjoint_and_valid_fraction():
    ds = data.load_dataset("mnist1d", seed=3, valid_fraction=0.25)
    assert (len(ds.y_train), len(ds.y_valid)) == (3000, 1000)
    assert not _rows(ds.x_train) & _rows(ds.x_valid)
    assert not _rows(ds.x_train) & _rows(ds.x_test)
    assert not _rows(ds.x_valid) & _rows(ds.x_test)


def test_digits_shapes_splits_and_determinism():
    ds = data.load_dataset("digits", seed=0)
    _check_dataset(ds, "digits", (8, 8, 1), 10, ndim=2)
    sizes = (len(ds.y_train), len(ds.y_valid), len(ds.y_test))
    assert sum(sizes) == 1797
    assert sizes == (1294, 144, 359)
    np.testing.assert_allclose(ds.x_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(), 1.0, atol=1e-4)
    _assert_datasets_equal(ds, data.load_dataset("digits", seed=0))
    other = data.load_dataset("digits", seed=1)
    assert not np.array_equal(ds.x_valid, other.x_valid)


def test_digits_splits_disjoint():
    # The 1,797 bundled images are all distinct, so rows identify examples.
    ds = data.load_dataset("digits", seed=5, valid_fraction=0.3)
    train, valid, test = _rows(ds.x_train), _rows(ds.x_valid), _rows(ds.x_test)
    assert len(train) + len(valid) + len(test) == 1797
    assert not train & valid and not train & test and not valid & test


def test_zero_valid_fraction_and_bad_fraction():
    ds = data.load_dataset("digits", valid_fraction=0.0)
    assert ds.x_valid.shape == (0, 8, 8, 1) and ds.y_valid.shape == (0,)
    with pytest.raises(NasjaxError, match="valid_fraction"):
        data.load_dataset("digits", valid_fraction=1.0)


def test_unknown_dataset_names_value_and_choices():
    with pytest.raises(NasjaxError) as info:
        data.load_dataset("imagenet")
    msg = str(info.value)
    assert "imagenet" in msg
    for name in ("mnist1d", "digits", "cifar10", "cifar100"):
        assert name in msg


def test_registry_names():
    assert set(data.DATASETS) == {"mnist1d", "digits", "cifar10", "cifar100"}


# ------------------------------------------------------------------ CIFAR


def test_cifar10_reader(tmp_path):
    folder, x_train, y_train, x_test, y_test = _write_cifar(tmp_path, "cifar10")
    ds = data.load_dataset("cifar10", seed=0, valid_fraction=0.0, data_dir=str(folder))
    _check_dataset(ds, "cifar10", (32, 32, 3), 10, ndim=2)
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (20, 0, 10)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    # Per-channel normalisation with train statistics, NHWC layout.
    scaled = x_train.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 1, 2))
    std = scaled.std(axis=(0, 1, 2))
    np.testing.assert_allclose(ds.x_train, (scaled - mean) / std, atol=1e-4)
    np.testing.assert_allclose(ds.x_test, (x_test / 255.0 - mean) / std, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_cifar10_parent_folder_env_var_and_valid_split(tmp_path, monkeypatch):
    _write_cifar(tmp_path, "cifar10")
    a = data.load_dataset("cifar10", seed=0, valid_fraction=0.25, data_dir=str(tmp_path))
    assert (len(a.y_train), len(a.y_valid), len(a.y_test)) == (15, 5, 10)
    assert not _rows(a.x_train) & _rows(a.x_valid)
    monkeypatch.setenv("NASJAX_CIFAR_DIR", str(tmp_path))
    b = data.load_dataset("cifar10", seed=0, valid_fraction=0.25)
    _assert_datasets_equal(a, b)


def test_cifar100_reader(tmp_path):
    folder, x_train, y_train, _, y_test = _write_cifar(tmp_path, "cifar100", seed=1)
    ds = data.load_dataset("cifar100", seed=0, valid_fraction=0.0, data_dir=str(tmp_path))
    _check_dataset(ds, "cifar100", (32, 32, 3), 100, ndim=2)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    scaled = x_train / 255.0
    expected = (scaled - scaled.mean(axis=(0, 1, 2))) / scaled.std(axis=(0, 1, 2))
    np.testing.assert_allclose(ds.x_train, expected, atol=1e-4)
    same = data.load_dataset("cifar100", valid_fraction=0.0, data_dir=str(folder))
    _assert_datasets_equal(ds, same)


def test_cifar_missing_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NASJAX_CIFAR_DIR", raising=False)
    with pytest.raises(NasjaxError) as info:
        data.load_dataset("cifar10")
    msg = str(info.value)
    assert "NASJAX_CIFAR_DIR" in msg and "--data-dir" in msg and "\n" not in msg

    missing = tmp_path / "nowhere"
    with pytest.raises(NasjaxError) as info:
        data.load_dataset("cifar100", data_dir=str(missing))
    msg = str(info.value)
    assert str(missing) in msg and "NASJAX_CIFAR_DIR" in msg and "\n" not in msg

    # A folder with a missing file is also reported.
    folder, *_ = _write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(NasjaxError, match="data_batch_3"):
        data.load_dataset("cifar10", data_dir=str(folder))


def test_cifar_corrupt_file(tmp_path):
    folder, *_ = _write_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(NasjaxError, match="test_batch"):
        data.load_dataset("cifar10", data_dir=str(folder))


# ------------------------------------------------------------------ batch_indices


def test_batch_indices_epochs_are_permutations():
    n, b, steps = 23, 5, 13  # 4 full batches per epoch, 3 incomplete epochs + 1 step
    idx = data.batch_indices(jax.random.key(0), n, b, steps)
    chex.assert_shape(idx, (steps, b))
    chex.assert_type(idx, np.int32)
    idx = np.asarray(idx)
    per_epoch = n // b
    for e in range(steps // per_epoch):
        epoch = idx[e * per_epoch : (e + 1) * per_epoch].ravel()
        assert len(np.unique(epoch)) == len(epoch) == per_epoch * b
        assert epoch.min() >= 0 and epoch.max() < n
    # Different epochs are shuffled differently.
    assert not np.array_equal(idx[:per_epoch], idx[per_epoch : 2 * per_epoch])


def test_batch_indices_deterministic_and_jittable():
    key = jax.random.key(7)
    a = data.batch_indices(key, 100, 10, 25)
    b = data.batch_indices(key, 100, 10, 25)
    chex.assert_trees_all_equal(a, b)
    c = data.batch_indices(jax.random.key(8), 100, 10, 25)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    jitted = jax.jit(data.batch_indices, static_argnums=(1, 2, 3))
    chex.assert_trees_all_equal(jitted(key, 100, 10, 25), a)
    # Raw uint32 keys work too.
    raw = data.batch_indices(jax.random.PRNGKey(0), 100, 10, 3)
    chex.assert_shape(raw, (3, 10))


def test_batch_indices_edge_cases():
    assert data.batch_indices(jax.random.key(0), 10, 10, 0).shape == (0, 10)
    full = np.asarray(data.batch_indices(jax.random.key(0), 10, 10, 2))
    assert sorted(full[0]) == list(range(10)) and sorted(full[1]) == list(range(10))
    with pytest.raises(NasjaxError, match="batch_size"):
        data.batch_indices(jax.random.key(0), 10, 11, 1)
