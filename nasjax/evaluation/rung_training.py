"""Training in rungs: members trained further from their own state, one program for all.

Multi-fidelity search (:mod:`nasjax.search.hyperband`) trains a set of architectures for
some steps, keeps the best and trains the survivors further. :func:`rung_trainer` does that
with the population trainer of :mod:`nasjax.evaluation.training`: each call continues the
members' own :class:`~nasjax.evaluation.training.MemberState` over a window of steps of
one ``config.steps``-step run (same minibatches, same learning-rate schedule), so a member
trained in rungs ends exactly where one uninterrupted run would. Members go through in
groups of a fixed size (the devices times ``member_batch``; the last group padded with
copies), so every rung of every size and length runs the one program compiled at the first
call, with the window a traced argument. Fitness is the validation accuracy (maximised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from nasjax.data import Dataset
from nasjax.evaluation.training import (
    MemberState,
    PopulationProgram,
    compile_population,
    init_population,
)
from nasjax.spaces.base import SearchSpace
from nasjax.training_recipe import TrainConfig


class RungTrainer(NamedTuple):
    """``init(keys) -> states`` and ``train(keys, genotypes, states, start, stop) ->
    (fitness, metrics, states)``; ``keys`` are raw ``uint32[n, 2]`` key data, ``states``
    ``[n]``-stacked :class:`MemberState` (NumPy), fitness the validation accuracy."""

    init: Callable[[np.ndarray], MemberState]
    train: Callable[..., tuple[np.ndarray, dict[str, np.ndarray], MemberState]]
    group: int


def _take(tree: Any, rows: np.ndarray) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[rows], tree)


def _groups(size: int, group: int) -> list[tuple[np.ndarray, int]]:
    """``(rows, count)`` of each group of ``group`` members: ``count`` real ones, then
    copies of the group's first (padding, dropped from the results)."""
    out = []
    for first in range(0, size, group):
        rows = np.arange(first, first + group)
        count = min(group, size - first)
        rows[count:] = first
        out.append((rows, count))
    return out


def rung_trainer(
    space: SearchSpace, data: Dataset, config: TrainConfig, group: int | None = None
) -> RungTrainer:
    """A :class:`RungTrainer` of ``space`` on ``data`` with ``config``'s recipe.

    Args:
      space: a space with a functional network (the population trainer's contract).
      data: the dataset.
      config: the recipe; ``config.steps`` is the whole run a member's windows cut up
        (its learning-rate schedule and minibatch order).
      group: members per compiled call (default: the devices times ``member_batch``).
    """
    group = group or jax.device_count() * config.member_batch
    programs: list[PopulationProgram] = []  # compiled at the first call

    def init(keys: np.ndarray) -> MemberState:
        outs = []
        for rows, count in _groups(len(keys), group):
            state = init_population(keys[rows], group, data, space, config, split=False)
            outs.append(_take(state, np.arange(count)))
        return jax.tree.map(lambda *a: np.concatenate(a), *outs)

    def train(
        keys: np.ndarray, genotypes: np.ndarray, states: MemberState, start: int, stop: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray], MemberState]:
        outs = []
        for rows, count in _groups(len(genotypes), group):
            args = (keys[rows], np.asarray(genotypes)[rows])
            sub = _take(states, rows)
            if not programs:
                programs.append(
                    compile_population(args[1], data, space, config, states=sub, window=[0, 1])
                )
            out = programs[0].run(*args, split=False, states=sub, window=[start, stop])
            outs.append(_take(out, np.arange(count)))
        out = jax.tree.map(lambda *a: np.concatenate(a), *outs)
        metrics = {k: out[k] for k in ("valid_accuracy", "test_accuracy", "final_train_loss")}
        return out["valid_accuracy"], metrics, out["state"]

    return RungTrainer(init, train, group)
