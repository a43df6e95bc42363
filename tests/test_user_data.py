"""Your own data: Dataset.from_arrays, --dataset F.npz end to end, one line per bad file."""

import json

import numpy as np
import pytest

import nasjax
from nasjax.cli import main
from nasjax.data import Dataset, dataset_task, load_dataset, load_mnist1d
from nasjax.errors import NasjaxError
from nasjax.evaluation.module_training import module_accuracy
from nasjax.tasks import Task, get_task


def _images(n: int, seed: int = 0, shape=(6, 6, 2), classes: int = 3):
    """Separable toy images: class k has a bright channel-0 pixel at row k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0.0, 0.3, (n, *shape)).astype(np.float32)
    x[np.arange(n), y, 0, 0] += 3.0
    return x, y.astype(np.int64)


def test_from_arrays_splits_valid_as_the_builtin_loaders():
    whole = load_mnist1d(valid_fraction=0.0)  # every training signal, in order
    ours = Dataset.from_arrays(
        whole.x_train, whole.y_train, whole.x_test, whole.y_test, seed=3, name="mine"
    )
    builtin = load_mnist1d(seed=3)
    for got, want in zip(ours[:6], builtin[:6]):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert ours.task == builtin.task == get_task("mnist1d") and ours.name == "mine"


def test_from_arrays_keeps_a_given_valid_split_and_casts():
    x, y = _images(30)
    data = Dataset.from_arrays(x[:20], y[:20], x[25:], y[25:], x[20:25], y[20:25])
    np.testing.assert_array_equal(data.x_valid, x[20:25])
    assert data.y_train.dtype == np.int32 and data.x_test.dtype == np.float32
    assert data.task == Task((6, 6, 2), 3) and data.ndim == 2
    assert Dataset.from_arrays(x, y, x, y, num_classes=7).num_classes == 7


def _bad(**change):
    x, y = _images(20)
    arrays = {"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5]}
    arrays.update(change)
    return {k: v for k, v in arrays.items() if v is not None}


x20, y20 = _images(20)
BAD = {
    "missing": (_bad(y_test=None), "lacks y_test"),
    "unknown": (_bad(x_val=x20), "has x_val"),
    "x dtype": (_bad(x_train=x20.astype(str)), "x_train has dtype <U"),
    "y dtype": (_bad(y_train=y20.astype(np.float32)), "y_train has dtype float32"),
    "x rank": (_bad(x_train=x20.reshape(20, -1)), "x_train has shape (20, 72)"),
    "x/y length": (_bad(y_train=y20[:19]), "y_train has shape (19,); expected (20,)"),
    "example shape": (_bad(x_test=x20[:5, :4]), "x_test examples have shape (4, 6, 2)"),
    "negative label": (_bad(y_test=-y20[:5] - 1), "y_test holds negative labels"),
    "label range": (_bad(num_classes=np.int64(2)), "label 2, out of range for num_classes=2"),
    "nan": (_bad(x_test=np.where(np.eye(6)[None, :, :, None] > 0, np.nan, x20[:5])), "NaN"),
    "inf": (_bad(x_train=np.full_like(x20, np.inf)), "x_train holds 1440 NaN or infinite"),
    "valid alone": (_bad(x_valid=x20), "give x_valid and y_valid together"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_npz_is_one_clear_line_at_the_cli(capsys, tmp_path, case):
    arrays, expected = BAD[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code = main(["search", "--dataset", str(path), "--smoke", "--out", str(tmp_path / "run")])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("nasjax: error: dataset file"), err
    assert expected in err, err
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("case", ["text", "truncated", "npy", "missing"])
def test_unreadable_files_are_one_clear_line(tmp_path, case):
    path = tmp_path / "data.npz"
    if case == "text":
        path.write_text("x_train,y_train\n1,2\n")
    elif case == "truncated":
        np.savez(path, **_bad())
        path.write_bytes(path.read_bytes()[:600])
    elif case == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    expected = {
        "text": "is not an .npz archive",
        "truncated": "is not an .npz archive",
        "npy": "holds one array, not an .npz archive",
        "missing": "does not exist",
    }[case]
    with pytest.raises(NasjaxError, match=expected) as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)
    with pytest.raises(NasjaxError, match=expected):
        dataset_task(str(path))


def test_unknown_dataset_names_the_file_option():
    with pytest.raises(NasjaxError, match=r"valid choices: .*cifar100, or a path to an \.npz"):
        load_dataset("cifar11")


@pytest.mark.slow
def test_npz_search_runs_end_to_end_and_builds_the_network_for_the_arrays(capsys, tmp_path):
    """2D images of a shape and class count no built-in task has: the NB201 network gets a
    2D stem with 2 input channels and 3 outputs, trains, is saved and loads back."""
    x, y = _images(140, seed=1)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    out = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--dataset", str(path), "--smoke", "--seed", "0"]
    code = main([*argv, "--batch-size", "30", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == str(path) and summary["num_evaluated"] == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    data = load_dataset(str(path), seed=0)
    assert (len(data.y_train), len(data.y_valid)) == (90, 10)  # valid carved out of train
    result = nasjax.load_result(out)
    assert result.task == Task((6, 6, 2), 3)
    logits = result.module.apply(result.variables, data.x_test, train=False)
    assert logits.shape == (40, 3)
    stem = result.variables["params"]["stem_conv"]["kernel"]
    assert stem.shape[:3] == (3, 3, 2)  # a 2D stem over the file's 2 channels
    acc = module_accuracy(result.module, result.variables, data.x_test, data.y_test, 500)
    assert acc == summary["model_test_accuracy"]
    capsys.readouterr()
    # info costs the network for the file's shape and classes, as the search did.
    assert main(["info", "--space", "nb201", "--arch", summary["arch"], "--dataset", str(path),
                 "--channels", "4", "--cells-per-stage", "1"]) == 0  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert record["params"] == summary["params"] and record["dataset"] == str(path)
    # --resume on a file whose bytes changed since is refused, naming its digest.
    np.savez(path, x_train=x[:100] + 1, y_train=y[:100], x_test=x[100:], y_test=y[100:])
    assert main([*argv, "--batch-size", "30", "--no-progress", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and err.count("\n") == 1
