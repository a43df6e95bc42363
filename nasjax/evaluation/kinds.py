"""How ``nasjax search`` trains and scores a population, per kind of data a space consumes.

:data:`DATA_KINDS` maps a space's ``data_kind`` to a :class:`DataKind`: how its data loads,
the training config of a run, the population evaluator (fitness maximised), the final
retraining of the best architecture, and the lines that report it. ``"images"``:
classification datasets (``nasjax.data``), population training of ``space.functional``
(:mod:`nasjax.evaluation.training`), fitness = validation accuracy. ``"text"``: byte-level
text (``nasjax.text``), LM training (:mod:`nasjax.evaluation.lm_training`; AdamW at its LM
defaults, so ``learning_rate`` and ``optimizer`` do not apply), fitness = minus the
validation bits per byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from nasjax.data import DATASETS, dataset_task, load_dataset
from nasjax.errors import check_choice
from nasjax.evaluation.lm_training import (
    LMTrainConfig,
    module_bits_per_byte,
    train_lm_population,
)
from nasjax.evaluation.module_training import module_accuracy
from nasjax.evaluation.rung_training import RungTrainer, rung_trainer
from nasjax.evaluation.training import Evaluator, train_population, training_evaluator
from nasjax.spaces.saved import save_model, trained_network
from nasjax.spaces.transformer import DATASETS as TEXT_DATASETS
from nasjax.text import load_text
from nasjax.training_recipe import TrainConfig

# Greydanus 2020, "Scaling down deep learning", test accuracy on MNIST-1D (%).
MNIST1D_PUBLISHED = {"logistic": 32, "mlp": 68, "cnn": 94, "gru": 91, "human": 96}


class Recipe(NamedTuple):
    """The training settings of a search, whatever the kind (a kind uses what applies)."""

    steps: int
    batch_size: int
    learning_rate: float
    optimizer: str
    member_batch: int
    size: dict[str, int]
    smoke: bool  # text: one compiled (elastic) program for every member


class DataKind(NamedTuple):
    """One row of :data:`DATA_KINDS` (see the module docstring).

    Attributes:
      datasets: valid ``--dataset`` names of ``search``; ``search_dataset`` and
        ``info_dataset`` are the defaults of the two commands.
      objective: what is optimised, for messages.
      fitness: the fitness axis of the search curve.
      pareto: the script to run for a multi-objective search.
      search_size: sizes a search trains at unless given (short population training).
      smoke: caps of ``--smoke`` (run settings and sizes).
      load: ``(dataset, seed, data_dir, text) -> data``.
      task: ``dataset -> what the space's networks and costs take as their dataset``
        (images: a :class:`~nasjax.tasks.Task`, from a name or your own ``.npz`` file;
        text: the name), one line for an unknown name or a bad file.
      train_config: ``Recipe -> TrainConfig | LMTrainConfig``.
      evaluator: ``(space, data, config, key) -> Evaluator``.
      retrain: ``(key, space, data, config, genotype, out=None) -> summary fields``; with
        ``out`` the retrained network is saved there (:mod:`nasjax.spaces.saved`).
      search_fields: ``best fitness -> summary fields``.
      report: ``summary -> lines``.
      rungs: ``(space, data, config) -> RungTrainer`` (training continued in rungs, for
        ``--strategy hyperband``); ``None`` where the kind has none.
    """

    datasets: tuple[str, ...]
    search_dataset: str
    info_dataset: str
    objective: str
    fitness: str
    pareto: str
    search_size: dict[str, int]
    smoke: dict[str, int]
    load: Callable[..., Any]
    task: Callable[[str], Any]
    train_config: Callable[[Recipe], Any]
    evaluator: Callable[..., Evaluator]
    retrain: Callable[..., dict[str, Any]]
    search_fields: Callable[[float], dict[str, Any]]
    report: Callable[[dict[str, Any]], list[str]]
    rungs: Callable[..., RungTrainer] | None = None


# ----------------------------------------------------------------- images
def _image_config(recipe: Recipe) -> TrainConfig:
    return TrainConfig(
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        optimizer=recipe.optimizer,
        member_batch=recipe.member_batch,
        **recipe.size,
    )


def _image_retrain(
    key: jax.Array, space: Any, data: Any, config: Any, genotype: Any, out: Any = None
) -> dict:
    """Retrains ``genotype``; with ``out`` saves the trained network there
    (:mod:`nasjax.spaces.saved`) and reports its own test accuracy."""
    g = np.asarray(genotype)
    keep = out is not None
    final = train_population(key, g[None], data, space, config, keep_variables=keep)
    fields = {k: float(final[k][0]) for k in ("test_accuracy", "valid_accuracy")}
    if keep:
        size = {"channels": config.channels, "cells_per_stage": config.cells_per_stage}
        member = jax.tree.map(lambda a: a[0], (final["params"], final["batch_stats"]))
        module, variables, extra = trained_network(space, g, data.task, size, *member)
        acc = module_accuracy(module, variables, data.x_test, data.y_test, config.eval_batch_size)
        fields.update(save_model(out, space, g, data.task, size, variables, extra=extra))
        fields["model_test_accuracy"] = acc
    return fields


def _image_report(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"test acc   {100 * summary['test_accuracy']:.2f}%  (valid "
        f"{100 * summary['valid_accuracy']:.2f}%)",
        f"params     {summary['params']:,}   MACs {summary['macs']:,}",
    ]
    if summary["dataset"] == "mnist1d":
        published = ", ".join(f"{k} {v}%" for k, v in MNIST1D_PUBLISHED.items())
        lines.append(f"published MNIST-1D test accuracy (Greydanus 2020): {published}")
    return lines


IMAGES = DataKind(
    datasets=tuple(DATASETS),
    search_dataset="mnist1d",
    info_dataset="cifar10",
    objective="validation accuracy",
    fitness="fitness (validation accuracy, maximised)",
    pareto="experiments/mnist1d_pareto.py for accuracy vs latency",
    search_size={"channels": 16, "cells_per_stage": 1},
    smoke={"budget": 4, "batch": 2, "steps": 6, "final_steps": 6, "channels": 4},
    load=lambda dataset, seed, data_dir, text: load_dataset(dataset, seed=seed, data_dir=data_dir),
    task=lambda dataset: dataset_task(dataset, tuple(DATASETS)),
    train_config=_image_config,
    evaluator=lambda space, data, config, key: training_evaluator(space, data, config),
    retrain=_image_retrain,
    search_fields=lambda best: {"search_valid_accuracy": best},
    report=_image_report,
    rungs=rung_trainer,
)


# ----------------------------------------------------------------- text
def _text_config(recipe: Recipe) -> LMTrainConfig:
    mode = "elastic" if recipe.smoke else "decoded"  # smoke: one compile for every model
    return LMTrainConfig(
        steps=recipe.steps, batch_size=recipe.batch_size, context=recipe.size["context"], mode=mode
    )


def _text_evaluator(space: Any, data: Any, config: LMTrainConfig, key: jax.Array) -> Evaluator:
    """Every member trained from ``key`` (common random numbers), fitness ``-valid_bpb``."""

    def evaluate(_: jax.Array, population: jax.Array) -> tuple[Any, dict]:
        trained = train_lm_population(key, np.asarray(population), data, space, config)
        metrics = {k: trained[k] for k in ("valid_bpb", "valid_ppl", "train_bpb")}
        return -trained["valid_bpb"], metrics

    return Evaluator(evaluate)


def _text_retrain(
    key: jax.Array, space: Any, data: Any, config: Any, genotype: Any, out: Any = None
) -> dict:
    """Retrains ``genotype``; with ``out`` saves the decoded model there
    (:mod:`nasjax.spaces.saved`) and reports its own validation bits per byte."""
    g = np.asarray(genotype)
    keep = out is not None
    final = train_lm_population(key, g[None], data, space, config, keep_params=keep)
    fields: dict[str, Any] = {k: float(final[k][0]) for k in ("valid_bpb", "valid_ppl")}
    if keep:
        size, dataset = {"context": config.context}, TEXT_DATASETS[0]  # the one text dataset
        variables = {"params": final["params"][0]}
        module = space.decode(g, dataset, **size)
        fields.update(save_model(out, space, g, dataset, size, variables))
        fields["model_valid_bpb"] = module_bits_per_byte(module, variables, data, config)
    return {**fields, "text": data.source}


def _text_report(summary: dict[str, Any]) -> list[str]:
    return [
        f"valid      {summary['valid_bpb']:.3f} bits per byte (perplexity "
        f"{summary['valid_ppl']:.2f} per byte) on {summary['text']}",
        f"params     {summary['decoder_params']:,} decoder, {summary['total_params']:,} "
        f"total; {summary['flops_per_token']:,} FLOPs per token",
    ]


TEXT = DataKind(
    datasets=TEXT_DATASETS,
    search_dataset=TEXT_DATASETS[0],
    info_dataset=TEXT_DATASETS[0],
    objective="validation bits per byte",
    fitness="fitness (minus validation bits per byte, maximised)",
    pareto="experiments/transformer_pareto.py for bits per byte against latency",
    search_size={},
    smoke={"budget": 4, "batch": 2, "steps": 3, "final_steps": 3, "batch_size": 2, "context": 16},
    load=lambda dataset, seed, data_dir, text: load_text(text),
    task=lambda dataset: check_choice("dataset", dataset, TEXT_DATASETS) or dataset,
    train_config=_text_config,
    evaluator=_text_evaluator,
    retrain=_text_retrain,
    search_fields=lambda best: {"search_valid_bpb": -best},
    report=_text_report,
)

DATA_KINDS: dict[str, DataKind] = {"images": IMAGES, "text": TEXT}
"""``space.data_kind`` -> how ``search`` runs on it."""
