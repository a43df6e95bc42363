"""How an architecture is trained: the optimiser recipe shared by every trainer.

:class:`TrainConfig` is the recipe of NAS-Bench-201's training (Dong & Yang, ICLR 2020:
SGD with Nesterov momentum 0.9, weight decay 5e-4, a cosine-decayed learning rate) or
AdamW, plus the network size a population trainer builds; :func:`make_optimizer` turns
it into an optax transform. A foundation module, so the population trainer
(:mod:`nasjax.evaluation.training`), retraining a decoded module and the differentiable
bit-width search all train the same way.
"""

from __future__ import annotations

from typing import NamedTuple

import optax

from nasjax.errors import check_choice

OPTIMIZERS = ("sgd", "adamw")


class TrainConfig(NamedTuple):
    """How each architecture is trained.

    Attributes:
      steps: optimiser steps.
      batch_size: training minibatch size.
      learning_rate: peak learning rate (cosine-decayed to zero over ``steps``).
      weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
      optimizer: ``"sgd"`` (Nesterov momentum 0.9, as NAS-Bench-201) or ``"adamw"``.
      channels: ``C`` of the network's first stage.
      cells_per_stage: ``N`` cells per stage.
      member_batch: members vmapped together inside ``lax.map`` (1 = loop; see module doc).
      eval_batch_size: chunk size for evaluating accuracy.
    """

    steps: int = 400
    batch_size: int = 100
    learning_rate: float = 0.05
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    channels: int = 16
    cells_per_stage: int = 1
    member_batch: int = 1
    eval_batch_size: int = 500


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax transform of a ``TrainConfig``."""
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    if config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(schedule, momentum=0.9, nesterov=True),
        )
    return optax.adamw(schedule, weight_decay=config.weight_decay)
