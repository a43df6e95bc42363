"""One ``jit``-compiled search step per gradient-based method (the DARTS family).

Architecture logits ``alpha`` (and PC-DARTS's ``beta``) are kept apart from the network
weights, each with its own optax transform, and the two are updated alternately on two
halves of the training data (weights on one, architecture on the other):

* ``darts1`` — DARTS first order (Liu et al., ICLR 2019): ``grad_alpha L_val(w, alpha)``.
* ``darts2`` — DARTS second order: the gradient of the validation loss after one virtual
  weight step, ``L_val(w - xi * (m * v + grad_w L_train(w, alpha) + wd * w), alpha)``
  (the reference's unrolled step, with momentum buffer ``v`` and weight decay). ``exact``
  differentiates through it with ``jax.grad``; ``finite_difference`` is the paper's
  approximation of the Hessian-vector product with ``eps = 0.01 / ||grad_w' L_val||``.
* ``gdas`` — GDAS (Dong & Yang, CVPR 2019): a hard Gumbel-softmax sample per edge with
  straight-through gradients, only the sampled op computed; ``tau`` falls linearly
  10 -> 0.1; the weights are updated first, then ``alpha``, each with its own sample.
* ``pcdarts`` — PC-DARTS (Xu et al., ICLR 2020): partial channels (K=4) and edge
  normalisation ``beta``, first-order updates of ``alpha`` and ``beta`` after a warm-up
  in which only the weights train.

Optimisers follow the papers: weights SGD, momentum 0.9, cosine learning rate, weight
decay 3e-4, gradient norm clipped at 5; architecture Adam with betas (0.5, 0.999) and
weight decay 1e-3 (L2, as PyTorch's Adam), lr 3e-4 (6e-4 for PC-DARTS).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nasjax.errors import NasjaxError, check_choice
from nasjax.nets.gumbel import gumbel_softmax, linear_temperature
from nasjax.nets.relaxed import ArchWeights, RelaxedNetwork

METHODS: dict[str, str] = {
    "darts1": "darts",
    "darts2": "darts",
    "gdas": "gdas",
    "pcdarts": "pcdarts",
}
"""Search methods and the mixed-op mode of the network each one searches."""

UNROLLED = ("exact", "finite_difference")
"""How ``darts2`` computes its hypergradient."""


class MethodConfig(NamedTuple):
    """Hyper-parameters of one method (``method_config`` fills the papers' defaults).

    Attributes:
      method: one of :data:`METHODS`.
      total_steps: weight steps of the whole search (the cosine schedule's length).
      weight_lr: peak weight learning rate; cosine-annealed to ``weight_lr_min``.
      weight_lr_min: final weight learning rate.
      momentum: SGD momentum.
      weight_decay: weight L2 decay.
      grad_clip: global gradient-norm clip of the weight step.
      arch_lr: Adam learning rate of alpha (and beta).
      arch_betas: Adam betas.
      arch_weight_decay: L2 decay of alpha (and beta).
      unrolled: ``darts2``'s hypergradient, one of :data:`UNROLLED`.
      tau_max: GDAS's initial Gumbel-softmax temperature.
      tau_min: GDAS's final temperature.
      arch_warmup_steps: steps before alpha starts to move (PC-DARTS trains weights only
        for its first 15 of 50 epochs).
    """

    method: str
    total_steps: int
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    unrolled: str = "exact"
    tau_max: float = 10.0
    tau_min: float = 0.1
    arch_warmup_steps: int = 0


def method_config(method: str, total_steps: int, **overrides: Any) -> MethodConfig:
    """The paper's settings of ``method`` for a search of ``total_steps`` weight steps.

    PC-DARTS: alpha lr 6e-4, weight lr 0.1 at batch 256 (pass ``weight_lr`` scaled to
    your batch), architecture frozen for the first 30% of the search (15 of 50 epochs).
    Any field of :class:`MethodConfig` can be overridden.
    """
    check_choice("method", method, METHODS)
    if total_steps < 1:
        raise NasjaxError(f"total_steps must be >= 1, got {total_steps}")
    defaults: dict[str, Any] = {}
    if method == "pcdarts":
        defaults = {
            "arch_lr": 6e-4,
            "weight_lr_min": 0.0,
            "arch_warmup_steps": total_steps * 3 // 10,
        }
    config = MethodConfig(method=method, total_steps=total_steps, **{**defaults, **overrides})
    check_choice("unrolled hypergradient", config.unrolled, UNROLLED)
    return config


def weight_schedule(config: MethodConfig) -> optax.Schedule:
    """Cosine annealing of the weight learning rate over the search, per step."""
    alpha = config.weight_lr_min / config.weight_lr if config.weight_lr > 0 else 0.0
    return optax.cosine_decay_schedule(config.weight_lr, config.total_steps, alpha=alpha)


def weight_optimizer(config: MethodConfig) -> optax.GradientTransformation:
    """SGD with momentum and L2 decay, after global-norm clipping (PyTorch's order)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(weight_schedule(config), momentum=config.momentum),
    )


def arch_optimizer(config: MethodConfig) -> optax.GradientTransformation:
    """Adam with L2 decay added to the gradient (PyTorch ``Adam(weight_decay=...)``)."""
    b1, b2 = config.arch_betas
    return optax.chain(
        optax.add_decayed_weights(config.arch_weight_decay),
        optax.adam(config.arch_lr, b1=b1, b2=b2),
    )


class SearchState(NamedTuple):
    """Everything a gradient search carries from step to step (a pytree)."""

    params: Any
    alpha: jnp.ndarray
    beta: jnp.ndarray
    weight_opt: Any
    arch_opt: Any
    step: jnp.ndarray


def init_state(key: jax.Array, net: RelaxedNetwork, config: MethodConfig) -> SearchState:
    """Network weights from ``net.init``; alpha and beta at ``1e-3 * N(0, 1)`` (DARTS)."""
    key_net, key_alpha, key_beta = jax.random.split(key, 3)
    params = net.init(key_net)
    alpha = 1e-3 * jax.random.normal(key_alpha, net.alpha_shape)
    beta = 1e-3 * jax.random.normal(key_beta, net.beta_shape)
    arch = {"alpha": alpha, "beta": beta} if config.method == "pcdarts" else {"alpha": alpha}
    return SearchState(
        params=params,
        alpha=alpha,
        beta=beta,
        weight_opt=weight_optimizer(config).init(params),
        arch_opt=arch_optimizer(config).init(arch),
        step=jnp.zeros((), jnp.int32),
    )


def arch_logits(config: MethodConfig, state: SearchState) -> dict[str, jnp.ndarray]:
    """The logits the method trains: ``alpha``, and ``beta`` for PC-DARTS only."""
    if config.method == "pcdarts":
        return {"alpha": state.alpha, "beta": state.beta}
    return {"alpha": state.alpha}


def temperature(config: MethodConfig, step: jnp.ndarray) -> jnp.ndarray:
    """GDAS's ``tau`` at ``step``: linear from ``tau_max`` to ``tau_min`` over the search."""
    return linear_temperature(step, config.total_steps, config.tau_max, config.tau_min)


def arch_weights(
    config: MethodConfig, arch: dict[str, jnp.ndarray], key: jax.Array, step: jnp.ndarray
) -> ArchWeights:
    """The method's view of the logits: softmax weights, or a hard GDAS sample."""
    if config.method == "gdas":
        hard, index = gumbel_softmax(key, arch["alpha"], temperature(config, step))
        return ArchWeights(hard, index, None)
    weights = jax.nn.softmax(arch["alpha"], axis=-1)
    return ArchWeights(weights, None, arch.get("beta"))


def _loss(
    net: RelaxedNetwork, params: Any, arch: ArchWeights, x: jnp.ndarray, y: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    logits = net.apply(params, x, arch)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def _virtual_step(
    net: RelaxedNetwork, config: MethodConfig, state: SearchState, arch: dict, batch: tuple
) -> Any:
    """DARTS's unrolled weights ``w' = w - xi * (m * v + grad L_train + wd * w)``."""
    x, y = batch
    grads = jax.grad(lambda p: _loss(net, p, arch_weights(config, arch, None, 0), x, y)[0])(
        state.params
    )
    momentum = optax.tree_utils.tree_get(state.weight_opt, "trace")
    xi = weight_schedule(config)(state.step)
    return jax.tree.map(
        lambda w, g, v: w - xi * (config.momentum * v + g + config.weight_decay * w),
        state.params,
        grads,
        momentum,
    )


def unrolled_val_loss(
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    arch: dict[str, jnp.ndarray],
    train_batch: tuple,
    valid_batch: tuple,
) -> jnp.ndarray:
    """``L_val(w'(alpha), alpha)``: the validation loss after the virtual weight step."""
    unrolled = _virtual_step(net, config, state, arch, train_batch)
    xv, yv = valid_batch
    return _loss(net, unrolled, arch_weights(config, arch, None, 0), xv, yv)[0]


def _finite_difference_hypergradient(
    net: RelaxedNetwork, config: MethodConfig, state: SearchState, arch: dict, batches: tuple
) -> dict:
    """The paper's approximation: ``grad_a L_val(w') - xi * (grad_a L_tr(w+) - grad_a
    L_tr(w-)) / (2 eps)`` with ``w+- = w +- eps * grad_w' L_val(w')``."""
    train_batch, (xv, yv) = batches
    unrolled = _virtual_step(net, config, state, arch, train_batch)

    def val_loss(params: Any, a: dict) -> jnp.ndarray:
        return _loss(net, params, arch_weights(config, a, None, 0), xv, yv)[0]

    d_weights, d_arch = jax.grad(val_loss, argnums=(0, 1))(unrolled, arch)
    eps = 0.01 / optax.tree.norm(d_weights)

    def train_arch_grad(sign: float) -> dict:
        shifted = jax.tree.map(lambda w, d: w + sign * eps * d, state.params, d_weights)
        x, y = train_batch
        return jax.grad(lambda a: _loss(net, shifted, arch_weights(config, a, None, 0), x, y)[0])(
            arch
        )

    hessian = jax.tree.map(
        lambda p, m: (p - m) / (2 * eps), train_arch_grad(1.0), train_arch_grad(-1.0)
    )
    xi = weight_schedule(config)(state.step)
    return jax.tree.map(lambda g, h: g - xi * h, d_arch, hessian)


def arch_gradient(
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    key: jax.Array,
    train_batch: tuple,
    valid_batch: tuple,
) -> tuple[dict, jnp.ndarray]:
    """The architecture gradient of ``config.method`` and the validation loss it saw."""
    arch = arch_logits(config, state)
    if config.method == "darts2":
        loss = unrolled_val_loss(net, config, state, arch, train_batch, valid_batch)
        if config.unrolled == "exact":
            grads = jax.grad(
                lambda a: unrolled_val_loss(net, config, state, a, train_batch, valid_batch)
            )(arch)
        else:
            grads = _finite_difference_hypergradient(
                net, config, state, arch, (train_batch, valid_batch)
            )
        return grads, loss
    xv, yv = valid_batch

    def val_loss(a: dict) -> jnp.ndarray:
        return _loss(net, state.params, arch_weights(config, a, key, state.step), xv, yv)[0]

    loss, grads = jax.value_and_grad(val_loss)(arch)
    return grads, loss


def _arch_update(
    net: RelaxedNetwork, config: MethodConfig, state: SearchState, key: jax.Array, batches: tuple
) -> tuple[SearchState, jnp.ndarray]:
    grads, loss = arch_gradient(net, config, state, key, *batches)
    arch = arch_logits(config, state)
    updates, arch_opt = arch_optimizer(config).update(grads, state.arch_opt, arch)
    live = state.step >= config.arch_warmup_steps
    new = optax.apply_updates(arch, updates)
    new = jax.tree.map(lambda n, o: jnp.where(live, n, o), new, arch)
    arch_opt = jax.tree.map(lambda n, o: jnp.where(live, n, o), arch_opt, state.arch_opt)
    new_beta = new.get("beta", state.beta)
    return state._replace(alpha=new["alpha"], beta=new_beta, arch_opt=arch_opt), loss


def _weight_update(
    net: RelaxedNetwork, config: MethodConfig, state: SearchState, key: jax.Array, batch: tuple
) -> tuple[SearchState, jnp.ndarray, jnp.ndarray]:
    arch = arch_weights(config, arch_logits(config, state), key, state.step)
    x, y = batch
    (loss, accuracy), grads = jax.value_and_grad(lambda p: _loss(net, p, arch, x, y), has_aux=True)(
        state.params
    )
    tx = weight_optimizer(config)
    updates, weight_opt = tx.update(grads, state.weight_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, weight_opt=weight_opt), loss, accuracy


def search_step(
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    key: jax.Array,
    train_batch: tuple,
    valid_batch: tuple,
) -> tuple[SearchState, dict[str, jnp.ndarray]]:
    """One alternating step: architecture on ``valid_batch``, weights on ``train_batch``.

    DARTS and PC-DARTS move the architecture first, GDAS the weights first (as their
    reference code does). ``jit`` it with ``net`` and ``config`` static, or scan it.
    """
    key_arch, key_weight = jax.random.split(key)
    if config.method == "gdas":
        state, train_loss, accuracy = _weight_update(net, config, state, key_weight, train_batch)
        state, valid_loss = _arch_update(net, config, state, key_arch, (train_batch, valid_batch))
    else:
        state, valid_loss = _arch_update(net, config, state, key_arch, (train_batch, valid_batch))
        state, train_loss, accuracy = _weight_update(net, config, state, key_weight, train_batch)
    metrics = {"train_loss": train_loss, "train_accuracy": accuracy, "valid_loss": valid_loss}
    return state._replace(step=state.step + 1), metrics


@functools.partial(jax.jit, static_argnums=(0, 1))
def search_epoch(
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    key: jax.Array,
    data: tuple[jnp.ndarray, ...],
    indices: tuple[jnp.ndarray, jnp.ndarray],
) -> tuple[SearchState, dict[str, jnp.ndarray]]:
    """``len(indices[0])`` search steps under one ``lax.scan`` (one compiled epoch).

    Args:
      net: the relaxed network (static).
      config: the method's settings (static).
      state: the search state.
      key: PRNG key of the epoch (GDAS's samples).
      data: ``(x_train, y_train, x_valid, y_valid)`` — the weights' and the
        architecture's halves.
      indices: ``int32[S, B]`` minibatch rows into each half.

    Returns:
      The new state and per-step metrics ``[S]``.
    """
    x_train, y_train, x_valid, y_valid = data

    def body(state: SearchState, rows: tuple) -> tuple[SearchState, dict]:
        t, v = rows
        step_key = jax.random.fold_in(key, state.step)
        return search_step(
            net, config, state, step_key, (x_train[t], y_train[t]), (x_valid[v], y_valid[v])
        )

    return jax.lax.scan(body, state, indices)
