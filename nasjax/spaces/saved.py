"""A search's final network, saved beside its summary and loaded back in one call.

A run folder that kept its retrained network holds ``model.json`` (what rebuilds the
module: the space's name, the genotype, what its networks take as their dataset (an image
task's input shape and classes, or a text space's dataset name), the size settings, and
what else the search fixed, e.g. a compression policy's bits and masks) and
``model.msgpack`` (the module's variables, ``flax.serialization`` msgpack). Both are
written atomically (:mod:`nasjax.rundir`), variables first, so a ``model.json`` always
names a complete variables file.

``load_result(dir)`` gives the genotype, ``module = space.decode(genotype, task, **size)``
and its ``variables``: ``result.module.apply(result.variables, x, train=False)`` gives the
logits of ``x`` (``[N, *input_shape]``, channels last); a text space's model takes
``result.module.apply(result.variables, tokens)`` (``int32[B, T]``). A space whose trained
network has no decoded Flax twin (a compressed network: quantized weights and activations, channel
masks from the weights' L1 ranks) is saved as its ``functional`` network's ``params`` and
``state``, and loaded as a :class:`FunctionalModule` with the same ``apply``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.rundir import read_json_record, write_bytes_atomic, write_json_atomic
from nasjax.tasks import Task

MODEL_FILE = "model.json"
VARIABLES_FILE = "model.msgpack"
_FORMAT, _VERSION = "nasjax-model", 2
_FIELDS = ("space", "genotype", "dataset", "size", "summary", "extra")
_FIELDS_V1 = ("space", "genotype", "input_shape", "num_classes", "size", "summary", "extra")


class FunctionalModule(NamedTuple):
    """A space's functional network fixed to one genotype, called like a Flax module:
    ``apply({"params": ..., "state": ...}, x, train=False) -> logits``."""

    net: Any
    genotype: tuple[int, ...]

    def apply(self, variables: dict[str, Any], x: Any, train: bool = False) -> Any:
        """Logits of ``x`` (``train=True`` would also update the state; it is dropped)."""
        g = jax.numpy.asarray(self.genotype, jax.numpy.int32)
        return self.net.apply(variables["params"], variables["state"], x, g, train)[0]


class SavedResult(NamedTuple):
    """A run's final network: ``module.apply(variables, x, train=False)`` -> logits."""

    genotype: np.ndarray
    module: Any
    variables: dict[str, Any]
    summary: dict[str, Any]
    task: Task | str  # what the space's networks take: an image Task or a text dataset name
    size: dict[str, int]
    extra: dict[str, Any]


def trained_network(
    space: Any, genotype: Any, task: Task, size: dict[str, int], params: Any, state: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """``(module, variables, extra)`` to save for one trained member of ``space.functional``:
    the decoded Flax network where the space exports to it (``decoded_variables``), else
    the functional network itself (:class:`FunctionalModule`)."""
    g = np.asarray(genotype)
    if hasattr(space, "decoded_variables"):
        variables = space.decoded_variables(g, task, params, state, **size)
        return space.decode(g, task, **size), variables, {}
    module = FunctionalModule(space.functional(task, **size), tuple(int(v) for v in g))
    extra: dict[str, Any] = {"module": "functional"}
    if hasattr(space, "policy_values"):  # a compression policy: bits and keep ratios
        extra["policy"] = {u: list(v) for u, v in space.policy_values(g).items()}
    return module, {"params": params, "state": state}, extra


def _dataset_record(task: Task | str) -> Any:
    if isinstance(task, str):
        return task
    return {"input_shape": [int(v) for v in task.input_shape], "num_classes": int(task.num_classes)}


def _dataset_from_record(record: Any) -> Task | str:
    if isinstance(record, str):
        return record
    return Task(tuple(record["input_shape"]), int(record["num_classes"]))


def _read_record(path: Path) -> dict[str, Any]:
    """``model.json``'s fields; a version-1 file (input shape and classes at top level,
    images only) reads as version 2."""
    try:
        version = json.loads(path.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        version = _VERSION  # read_json_record names the problem
    if version == 1:
        record = read_json_record(path, _FORMAT, 1, _FIELDS_V1, "saved network")
        shape, classes = record.pop("input_shape"), record.pop("num_classes")
        return {**record, "dataset": {"input_shape": shape, "num_classes": classes}}
    return read_json_record(path, _FORMAT, _VERSION, _FIELDS, "saved network")


def save_model(
    out: str | os.PathLike,
    space: Any,
    genotype: Any,
    task: Task | str,
    size: dict[str, int],
    variables: Any,
    *,
    summary_file: str = "summary.json",
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Writes ``model.msgpack`` then ``model.json`` to ``out``; returns the summary field
    ``{"model": "model.json"}``. ``task``: what ``space.decode`` takes as its dataset (an
    image :class:`~nasjax.tasks.Task` or a text dataset name). ``extra``: JSON fields the
    module needs besides."""
    out = Path(out)
    state = flax.serialization.to_state_dict(variables)
    state = jax.tree.map(np.asarray, state)
    write_bytes_atomic(out / VARIABLES_FILE, flax.serialization.msgpack_serialize(state))
    record = {
        "format": _FORMAT,
        "version": _VERSION,
        "space": space.name,
        "genotype": [int(v) for v in np.asarray(genotype).ravel()],
        "dataset": _dataset_record(task),
        "size": {k: int(v) for k, v in size.items()},
        "summary": summary_file,
        "extra": extra or {},
    }
    write_json_atomic(out / MODEL_FILE, record)
    return {"model": MODEL_FILE}


def load_result(run_dir: str | os.PathLike) -> SavedResult:
    """The retrained network a run saved (``nasjax search``, the gradient search and the
    compression search scripts), its genotype and its summary.

    Raises:
      NasjaxError: one line when the folder holds no saved network or a damaged one.
    """
    from nasjax.spaces import make_space  # the registry imports every space

    folder = Path(run_dir)
    if not (folder / MODEL_FILE).is_file():
        raise NasjaxError(
            f"{str(folder)!r} holds no saved network ({MODEL_FILE}); runs of nasjax search, "
            "experiments/darts_search.py and experiments/compression_search.py save one"
        )
    record = _read_record(folder / MODEL_FILE)
    try:
        blob = (folder / VARIABLES_FILE).read_bytes()
        variables = flax.serialization.msgpack_restore(blob)
    except (OSError, ValueError) as err:
        raise NasjaxError(f"cannot read {folder / VARIABLES_FILE}: {err}") from None
    summary_path = folder / record["summary"]
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    space = make_space(record["space"])
    task = _dataset_from_record(record["dataset"])
    genotype = np.asarray(record["genotype"], np.int32)
    if record["extra"].get("module") == "functional":
        net = space.functional(task, **record["size"])
        module: Any = FunctionalModule(net, tuple(int(v) for v in genotype))
    else:
        module = space.decode(genotype, task, **record["size"])
    return SavedResult(genotype, module, variables, summary, task, record["size"], record["extra"])
