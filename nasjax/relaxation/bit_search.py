"""Differentiable mixed-precision search: Gumbel-softmax over per-layer bit-widths.

Wu et al. (2018), "Mixed Precision Quantization of ConvNets via Differentiable Neural
Architecture Search": each layer's weight and activation bit-widths are categorical
choices with learned logits; a hard straight-through Gumbel-softmax sample
(:func:`nasjax.nets.gumbel.gumbel_softmax`, annealed temperature as in GDAS) picks
the bits of every forward pass, the quantized tensors are the sample-weighted sum over the
candidates (:func:`nasjax.nets.quantize.mixed_quantize`), and the loss adds
``cost_weight`` times the expected cost -- expected size in bits plus expected BitOps,
each relative to the full-precision network -- so one scalar trades accuracy for
compression. The architecture is fixed (a ``CompressedSpace`` with ``fixed_arch``) and
nothing is pruned. Several ``cost_weight`` values run as one compiled ``lax.map``; each
returns the ``argmax`` policy as a genotype of the space, to be retrained by the same QAT
evaluator as every other candidate.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.compression.costs import nb201_layers
from nasjax.compression.nb201_qat import UNITS
from nasjax.data import Dataset, batch_indices
from nasjax.errors import NasjaxError
from nasjax.nets.gumbel import gumbel_softmax, linear_temperature
from nasjax.nets.quantize import FULL_PRECISION
from nasjax.tasks import get_task
from nasjax.training_recipe import TrainConfig, make_optimizer


def unit_costs(space: Any, dataset: str, channels: int, cells_per_stage: int) -> np.ndarray:
    """``float[U, 2]``: each unit's weight count and MACs in the unpruned network."""
    task = get_task(dataset)
    dense = {u: (FULL_PRECISION, FULL_PRECISION, 1.0) for u in UNITS}
    layers = nb201_layers(
        [int(v) for v in space.fixed_arch],
        dense,
        spatial=task.input_shape[:-1],
        in_features=task.input_shape[-1],
        num_classes=task.num_classes,
        channels=channels,
        cells_per_stage=cells_per_stage,
    )
    prefix = {"stem": "stem", "classifier": "head"}
    out = np.zeros((len(UNITS), 2))
    for layer in layers:
        head = layer["layer"].split(".")[0]
        if head.startswith("reduction_"):
            unit = "reduce" + head[-1]
        elif head.startswith("cell_"):
            unit = "stage" + head.split("_")[1]
        else:
            unit = prefix[head]
        out[UNITS.index(unit)] += (layer["weights"], layer["macs"])
    return out


def expected_cost(logits: jax.Array, costs: jax.Array, bits: jax.Array) -> jax.Array:
    """Expected size + BitOps relative to full precision, under ``softmax(logits)``.

    Args:
      logits: ``float[U, 2, K]`` (weight, activation) bit logits per unit.
      costs: ``float[U, 2]`` weights and MACs per unit.
      bits: ``float[K]`` the candidate bit-widths.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    w_bits, a_bits = probs[:, 0] @ bits, probs[:, 1] @ bits
    size = jnp.sum(costs[:, 0] * w_bits) / (FULL_PRECISION * jnp.sum(costs[:, 0]))
    bitops = jnp.sum(costs[:, 1] * w_bits * a_bits) / (FULL_PRECISION**2 * jnp.sum(costs[:, 1]))
    return size + bitops


def dnas_bit_search(
    key: jax.Array,
    data: Dataset,
    space: Any,
    config: TrainConfig,
    cost_weights: Sequence[float],
    *,
    arch_learning_rate: float = 0.05,
) -> dict[str, np.ndarray]:
    """Searches per-unit bit-widths by gradient, once per ``cost_weight``, in one program.

    Weights train with ``config``'s optimizer; the bit logits with Adam, only once the
    policy is on (after ``space.float_steps``). The temperature falls linearly 5 -> 0.5.

    Args:
      key: PRNG key (the same for every cost weight: they differ only in the penalty).
      data: the dataset.
      space: a ``CompressedSpace`` with ``fixed_arch`` and ``1.0`` among its keep-ratios.
      config: the training recipe (steps, batch size, channels, cells per stage).
      cost_weights: penalty weights ``lambda >= 0``, one search each.
      arch_learning_rate: Adam step size of the bit logits.

    Returns:
      ``genotypes int32[L, D]`` (argmax policies), ``logits float[L, U, 2, K]`` and
      ``expected_cost float[L]`` at the end.
    """
    if space.fixed_arch is None or 1.0 not in space.keep_ratios:
        raise NasjaxError("the differentiable bit search needs fixed_arch and keep-ratio 1.0")
    if any(not w >= 0 for w in cost_weights):
        raise NasjaxError(f"cost weights must be >= 0, got {list(cost_weights)}")
    costs = unit_costs(space, data.task, config.channels, config.cells_per_stage)
    arrays = tuple(jnp.asarray(a) for a in data[:2])
    logits = _search(
        key,
        jnp.asarray(cost_weights, jnp.float32),
        arrays,
        jnp.asarray(costs, jnp.float32),
        space,
        config,
        data.task,
        arch_learning_rate,
    )
    logits = np.asarray(logits)
    keep = space.keep_ratios.index(1.0)
    genotypes = []
    for row in logits:
        choice = row.argmax(-1)
        genes = []
        for u_index, unit in enumerate(UNITS):
            genes += [int(choice[u_index, 0]), int(choice[u_index, 1])]
            genes += [] if unit == "head" else [keep]
        genotypes.append(genes)
    bits = jnp.asarray(space.bit_choices, jnp.float32)
    cost = [float(expected_cost(jnp.asarray(lg), jnp.asarray(costs), bits)) for lg in logits]
    return {
        "genotypes": np.asarray(genotypes, np.int32),
        "logits": logits,
        "expected_cost": np.asarray(cost),
    }


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _search(
    key: jax.Array,
    lams: jax.Array,
    arrays: tuple,
    costs: jax.Array,
    space: Any,
    config: TrainConfig,
    name: str,
    arch_lr: float,
) -> jax.Array:
    x_train, y_train = arrays
    net = space.functional(name, channels=config.channels, cells_per_stage=config.cells_per_stage)
    bits = jnp.asarray(space.bit_choices, jnp.float32)
    arch = jnp.asarray(space.fixed_arch, jnp.int32)
    k = len(space.bit_choices)
    tx, tx_arch = make_optimizer(config), optax.adam(arch_lr)

    def one(lam: jax.Array) -> jax.Array:
        key_init, key_data, key_gumbel = jax.random.split(key, 3)
        params, state = net.init(key_init)
        logits = jnp.zeros((len(UNITS), 2, k))
        idx = batch_indices(key_data, x_train.shape[0], config.batch_size, config.steps)

        def loss_fn(params: Any, logits: Any, state: Any, xb: Any, yb: Any, step: Any) -> Any:
            tau = linear_temperature(step, config.steps, 5.0, 0.5)
            hard, _ = gumbel_softmax(jax.random.fold_in(key_gumbel, step), logits, tau)
            policy = {u: {"w": hard[i, 0], "a": hard[i, 1], "k": 1.0} for i, u in enumerate(UNITS)}
            out, state = net.apply_policy(params, state, xb, arch, policy, True)
            ce = optax.softmax_cross_entropy_with_integer_labels(out, yb).mean()
            return ce + lam * expected_cost(logits, costs, bits), state

        def step(carry: Any, inputs: Any) -> Any:
            params, logits, state, opt, opt_arch = carry
            batch, t = inputs
            on = state["step"] >= space.float_steps
            grads, state = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
                params, logits, state, x_train[batch], y_train[batch], t
            )
            updates, opt = tx.update(grads[0], opt, params)
            arch_updates, opt_arch = tx_arch.update(grads[1], opt_arch, logits)
            logits = logits + jnp.where(on, 1.0, 0.0) * arch_updates
            return (optax.apply_updates(params, updates), logits, state, opt, opt_arch), None

        carry = (params, logits, state, tx.init(params), tx_arch.init(logits))
        steps = jnp.arange(config.steps)
        carry, _ = jax.lax.scan(step, carry, (idx, steps))
        return carry[1]

    return jax.lax.map(one, lams)
