"""Train one decoded Flax network from scratch: the final step of a gradient search.

Population training (:mod:`nasjax.evaluation.training`) runs a space's functional network
over many genotypes. A relaxation search ends with one genotype whose decoded network
(``space.decode``) is retrained from scratch and tested; any Flax module called as
``module.apply(variables, x, train=...)`` with an optional ``batch_stats`` collection
trains here with the same recipe (:class:`TrainConfig`: optimiser, cosine schedule,
steps), the whole loop in one ``lax.scan``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nasjax.data import Dataset, batch_indices
from nasjax.training_recipe import TrainConfig, make_optimizer


def _split(variables: Any) -> tuple[Any, Any]:
    variables = dict(variables)
    return variables.pop("params"), variables


def _accuracy(module: nn.Module, variables: Any, x: jnp.ndarray, y: jnp.ndarray, chunk: int) -> Any:
    """Fraction of ``x`` classified as ``y`` in inference mode, ``chunk`` examples a call."""
    chunk = min(chunk, x.shape[0])
    num = x.shape[0] // chunk * chunk  # whole chunks, then the remainder
    xs = x[:num].reshape((-1, chunk) + x.shape[1:])
    ys = y[:num].reshape(-1, chunk)

    def correct(batch: tuple) -> jnp.ndarray:
        logits = module.apply(variables, batch[0], train=False)
        return jnp.sum(jnp.argmax(logits, -1) == batch[1])

    total = jnp.sum(jax.lax.map(correct, (xs, ys)))
    if num < x.shape[0]:
        total += correct((x[num:], y[num:]))
    return total / x.shape[0]


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jit_accuracy(module: nn.Module, variables: Any, x: Any, y: Any, chunk: int) -> Any:
    return _accuracy(module, variables, x, y, chunk)


def module_accuracy(
    module: nn.Module, variables: Any, x: Any, y: Any, batch_size: int = 500
) -> float:
    """Test accuracy (a fraction) of a Flax module called as ``apply(variables, x,
    train=False)`` on ``(x, y)``, ``batch_size`` examples per call (what
    :func:`train_module` reports, and a saved network is checked with)."""
    return float(_jit_accuracy(module, variables, jnp.asarray(x), jnp.asarray(y), batch_size))


@functools.partial(jax.jit, static_argnums=(1, 3))
def _train(
    key: jax.Array, module: nn.Module, arrays: tuple[jnp.ndarray, ...], config: TrainConfig
) -> dict[str, jnp.ndarray]:
    x_train, y_train, x_valid, y_valid, x_test, y_test = arrays
    key_init, key_data = jax.random.split(key)
    params, rest = _split(module.init(key_init, x_train[:1], train=False))
    tx = make_optimizer(config)
    indices = batch_indices(key_data, x_train.shape[0], config.batch_size, config.steps)

    def loss_fn(params: Any, rest: Any, xb: jnp.ndarray, yb: jnp.ndarray) -> Any:
        logits, updates = module.apply(
            {"params": params, **rest}, xb, train=True, mutable=list(rest)
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, {**rest, **updates}

    def step(carry: Any, rows: jnp.ndarray) -> Any:
        params, rest, opt_state = carry
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, rest, x_train[rows], y_train[rows]
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    (params, rest, _), losses = jax.lax.scan(step, (params, rest, tx.init(params)), indices)
    variables = {"params": params, **rest}
    accuracy = lambda x, y: _accuracy(module, variables, x, y, config.eval_batch_size)
    return {
        "valid_accuracy": accuracy(x_valid, y_valid),
        "test_accuracy": accuracy(x_test, y_test),
        "loss_curve": losses,
        "variables": variables,
    }


def train_module(
    key: jax.Array,
    module: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    keep_variables: bool = False,
) -> dict[str, Any]:
    """Trains ``module`` on ``data`` for ``config.steps`` steps and tests it.

    Args:
      key: PRNG key (initialisation and minibatch order).
      module: a hashable Flax module (any decoded network) called as
        ``apply(variables, x, train=...)``.
      data: the dataset.
      config: optimiser, learning rate, batch size and steps (``channels`` and
        ``cells_per_stage`` are the module's business and ignored here).
      keep_variables: also return the trained ``variables`` (numpy arrays).

    Returns:
      ``valid_accuracy`` and ``test_accuracy`` (floats, fractions) and ``loss_curve``.
    """
    arrays = tuple(
        jnp.asarray(a)
        for a in (data.x_train, data.y_train, data.x_valid, data.y_valid, data.x_test, data.y_test)
    )
    out = _train(key, module, arrays, config)
    result = {
        "valid_accuracy": float(out["valid_accuracy"]),
        "test_accuracy": float(out["test_accuracy"]),
        "loss_curve": jax.device_get(out["loss_curve"]),
    }
    if keep_variables:
        result["variables"] = jax.device_get(out["variables"])
    return result
