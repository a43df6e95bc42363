"""BANANAS: predictor-guided search with an ensemble of MLPs on the path encoding.

White, Neiswanger & Savani, "BANANAS: Bayesian Optimization with Neural Architectures for
Neural Architecture Search", AAAI 2021. A Bayesian-optimisation loop whose surrogate is an
ensemble of small MLPs fitted to the told (genotype, fitness) pairs, with genotypes
featurised by the *path encoding* (``SearchSpace.path_encoding``; spaces without a cell
graph fall back to a flat one-hot). Each ``ask`` proposes a pool of candidates by mutating
the best told genotypes, scores it with an acquisition function over the ensemble and
returns the top candidates never told before. Acquisitions: independent Thompson sampling
(``"its"``, the paper's default: each candidate is scored by one randomly drawn ensemble
member) or UCB (``mean + kappa * std`` over the members). The first ``num_init`` queries
are uniform random.

Fixed shapes, so ``ask`` and ``tell`` jit and run under ``lax.scan`` + ``vmap``
(``nasjax.search.tabular``): the history is a ring buffer of ``max_history`` slots, and the
ensemble's parameters and Adam state live in the strategy state. Instead of refitting from
scratch for every query (the paper refits every 10 queries, proposing 10 at a time), every
``ask`` continues training for ``train_steps`` Adam steps on minibatches of the history
(warm start). Under ``vmap`` over seeds a ``lax.cond`` "refit every k queries" would run
both branches anyway, so a small constant amount of training per query is the cheap way:
200 seeds x 3 datasets of the NAS-Bench-201 Table 5 protocol take ~2.5 minutes of CPU
(``experiments/predictor_nb201.py``; twice the training per query, ``train_steps=20``,
doubles that without a clear gain). Fitness is MAXIMISED; NaN fitness is treated as
``-inf`` and never trains the predictor.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nasjax.errors import NasjaxError, check_choice
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import (
    BestSoFar,
    Strategy,
    check_positive_int,
    check_told,
    sanitize_fitness,
    tell_metrics,
)

ACQUISITIONS = ("its", "ucb")

Params = list[tuple[jax.Array, jax.Array]]  # per layer (weights [E, in, out], bias [E, out])


class Ensemble(NamedTuple):
    """An ensemble of ``E`` MLP regressors as pure functions (members stacked on axis 0).

    Attributes:
      init: ``init(key) -> (params, opt_state)``.
      predict: ``predict(params, x float[N, F]) -> float[E, N]`` (standardised units).
      train: ``train(key, params, opt_state, x float[H, F], y float[H], valid bool[H],
        steps) -> (params, opt_state)``: ``steps`` Adam steps of masked MSE on
        standardised targets, each member on its own minibatches of valid rows.
    """

    init: Any
    predict: Any
    train: Any


def mlp_ensemble(
    num_features: int,
    ensemble_size: int = 5,
    hidden_width: int = 32,
    hidden_layers: int = 2,
    learning_rate: float = 0.01,
    train_batch: int = 32,
) -> Ensemble:
    """The BANANAS surrogate: ``ensemble_size`` ReLU MLPs with Adam (optax), MSE loss.

    The paper uses 5 members of 10 layers x 20 units; smaller nets (2 x 32 here) fit the
    NAS-Bench-201 path encoding as well at a fraction of the cost on CPU.
    """
    sizes = [num_features] + [hidden_width] * hidden_layers + [1]
    optimizer = optax.adam(learning_rate)

    def init(key: jax.Array) -> tuple[Params, Any]:
        params = []
        for k, (fan_in, fan_out) in zip(
            jax.random.split(key, len(sizes) - 1), zip(sizes, sizes[1:])
        ):
            w = jax.random.normal(k, (ensemble_size, fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
            params.append((w, jnp.zeros((ensemble_size, fan_out))))
        return params, optimizer.init(params)

    def forward(params: Params, x: jax.Array) -> jax.Array:  # x [E, N, F] -> [E, N]
        h = x
        for i, (w, b) in enumerate(params):
            h = jnp.einsum("enf,efo->eno", h, w) + b[:, None, :]
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return h[..., 0]

    def predict(params: Params, x: jax.Array) -> jax.Array:
        return forward(params, jnp.broadcast_to(x, (ensemble_size,) + x.shape))

    def train(
        key: jax.Array,
        params: Params,
        opt_state: Any,
        x: jax.Array,
        y: jax.Array,
        valid: jax.Array,
        steps: int,
    ) -> tuple[Params, Any]:
        weight = valid.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(weight), 1.0)
        y = jnp.where(valid, y, 0.0)
        mean = jnp.sum(y * weight) / count
        std = jnp.sqrt(jnp.sum(weight * (y - mean) ** 2) / count)
        target = jnp.where(valid, (y - mean) / jnp.maximum(std, 1e-6), 0.0)
        # Rows are drawn uniformly from the filled prefix of the buffer; invalid rows
        # (NaN fitness) get weight 0.
        filled = jnp.maximum(jnp.max(jnp.where(valid, jnp.arange(x.shape[0]) + 1, 0)), 1)
        u = jax.random.uniform(key, (steps, ensemble_size, train_batch))
        rows = jnp.minimum(jnp.floor(u * filled).astype(jnp.int32), filled - 1)

        def loss_fn(p: Params, idx: jax.Array) -> jax.Array:
            err = forward(p, x[idx]) - target[idx]
            w = weight[idx]
            return jnp.sum(w * err**2) / jnp.maximum(jnp.sum(w), 1.0)

        def step(carry: tuple, idx: jax.Array) -> tuple[tuple, None]:
            p, s = carry
            grads = jax.grad(loss_fn)(p, idx)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), rows)
        return params, opt_state

    return Ensemble(init=init, predict=predict, train=train)


@struct.dataclass
class BananasState:
    """State of :func:`bananas` (fitness maximised).

    Attributes:
      genotypes: ``int32[H, D]`` ring buffer of the last ``H = max_history`` told
        genotypes; unfilled slots hold ``-1``.
      fitness: ``float32[H]`` their fitness, NaN stored as ``-inf``; ``-inf`` when unfilled.
      num_told: ``int32[]`` total number told.
      params, opt_state: the ensemble's MLP parameters and Adam state.
      best: the best genotype told so far.
    """

    genotypes: jax.Array
    fitness: jax.Array
    num_told: jax.Array
    params: Any
    opt_state: Any
    best: BestSoFar


def bananas(
    space: SearchSpace,
    ensemble_size: int = 5,
    hidden_width: int = 32,
    hidden_layers: int = 2,
    train_steps: int = 10,
    train_batch: int = 32,
    learning_rate: float = 0.01,
    num_candidates: int = 100,
    num_parents: int = 2,
    max_mutations: int = 1,
    num_init: int = 10,
    acquisition: str = "its",
    ucb_kappa: float = 0.5,
    max_history: int = 256,
    batch_size: int = 1,
) -> Strategy:
    """BANANAS (White et al., AAAI 2021): an MLP-ensemble predictor guides mutation.

    Fitness is MAXIMISED (accuracy-like); NaN fitness is treated as ``-inf``.

    Row ``i`` of an ``ask`` is uniform random while ``num_told + i < num_init``. Otherwise
    the ensemble (trained ``train_steps`` more Adam steps on the history first) scores
    ``num_candidates`` candidates, each a parent drawn uniformly from the ``num_parents``
    fittest told genotypes with 1..``max_mutations`` uniform one-decision mutations; a
    candidate equal to a told genotype (still in the history) or to an earlier candidate
    scores ``-inf``, and the ``batch_size`` best-scoring candidates are asked (a uniform
    random genotype if fewer than that many remain).

    Args:
      space: the search space (its ``path_encoding`` featurises genotypes).
      ensemble_size: MLPs in the ensemble (paper: 5).
      hidden_width, hidden_layers: size of each MLP.
      train_steps: Adam steps per ``ask`` (warm-started from the previous ``ask``).
      train_batch: rows per member and step.
      learning_rate: Adam's (paper: 0.01).
      num_candidates: size of the mutated candidate pool (paper: 100).
      num_parents: fittest told genotypes that candidates are mutated from.
      max_mutations: a candidate gets 1..max_mutations mutations (uniform).
      num_init: uniform random queries before the predictor is used (paper: 10).
      acquisition: ``"its"`` (independent Thompson sampling) or ``"ucb"``.
      ucb_kappa: ``kappa >= 0`` of UCB, ``mean + kappa * std``.
      max_history: told genotypes kept (the oldest are overwritten beyond it).
      batch_size: candidates per ``ask``, ``<= num_candidates``.

    Returns:
      A :class:`Strategy` over :class:`BananasState`.

    Raises:
      NasjaxError: one line naming the bad hyper-parameter and value.
    """
    for what, value in (
        ("ensemble_size", ensemble_size),
        ("hidden_width", hidden_width),
        ("hidden_layers", hidden_layers),
        ("train_steps", train_steps),
        ("train_batch", train_batch),
        ("num_candidates", num_candidates),
        ("num_parents", num_parents),
        ("max_mutations", max_mutations),
        ("num_init", num_init),
        ("max_history", max_history),
        ("batch_size", batch_size),
    ):
        check_positive_int(what, value)
    check_choice("acquisition", acquisition, ACQUISITIONS)
    for what, value, positive in (
        ("learning_rate", learning_rate, True),
        ("ucb_kappa", ucb_kappa, False),
    ):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise NasjaxError(f"{what} must be a finite number {bound}, got {value!r}")
    if batch_size > num_candidates:
        raise NasjaxError(
            f"batch_size must be <= num_candidates ({num_candidates}), got {batch_size}"
        )
    d = space.num_decisions
    features = int(space.path_encoding(jnp.zeros((d,), jnp.int32)).shape[-1])
    ensemble = mlp_ensemble(
        features, ensemble_size, hidden_width, hidden_layers, learning_rate, train_batch
    )

    def init(key: jax.Array) -> BananasState:
        params, opt_state = ensemble.init(key)
        return BananasState(
            genotypes=jnp.full((max_history, d), -1, jnp.int32),
            fitness=jnp.full((max_history,), -jnp.inf, jnp.float32),
            num_told=jnp.array(0, jnp.int32),
            params=params,
            opt_state=opt_state,
            best=BestSoFar.create(space),
        )

    def candidates(u: jax.Array, state: BananasState, num_valid: jax.Array) -> jax.Array:
        # u: [C, 2 + 2 * max_mutations] uniforms -> int32[C, D] mutated parents.
        top = jax.lax.top_k(state.fitness, min(num_parents, max_history))[1]
        n_par = jnp.clip(num_valid, 1, top.shape[0])
        pick = jnp.minimum(jnp.floor(u[:, 0] * n_par).astype(jnp.int32), n_par - 1)
        pool = state.genotypes[top[pick]]
        num_mut = 1 + jnp.minimum(jnp.floor(u[:, 1] * max_mutations), max_mutations - 1)
        for m in range(max_mutations):
            mutated = space.mutate_from_uniform(u[:, 2 + 2 * m : 4 + 2 * m], pool)
            pool = jnp.where((m < num_mut)[:, None], mutated, pool)
        return pool

    def ask(key: jax.Array, state: BananasState) -> tuple[jax.Array, BananasState]:
        k_train, k_rand, k_pool, k_acq = jax.random.split(key, 4)
        valid = jnp.isfinite(state.fitness)
        num_valid = jnp.sum(valid).astype(jnp.int32)
        x_hist = space.path_encoding(jnp.maximum(state.genotypes, 0))
        params, opt_state = ensemble.train(
            k_train, state.params, state.opt_state, x_hist, state.fitness, valid, train_steps
        )
        pool = candidates(
            jax.random.uniform(k_pool, (num_candidates, 2 + 2 * max_mutations)), state, num_valid
        )
        preds = ensemble.predict(params, space.path_encoding(pool))  # [E, C]
        if acquisition == "its":
            member = jax.random.randint(k_acq, (num_candidates,), 0, ensemble_size)
            score = jnp.take_along_axis(preds, member[None], axis=0)[0]
        else:
            score = jnp.mean(preds, 0) + ucb_kappa * jnp.std(preds, 0)
        told = jnp.any(jnp.all(pool[:, None] == state.genotypes[None], -1), -1)
        same = jnp.all(pool[:, None] == pool[None], -1)
        repeat = jnp.any(same & jnp.tril(jnp.ones_like(same), -1), -1)
        usable = ~told & ~repeat & (num_valid > 0)
        score = jnp.where(usable, score, -jnp.inf)
        top_score, top_idx = jax.lax.top_k(score, batch_size)
        fresh = space.sample(k_rand, batch_size)
        warm_up = state.num_told + jnp.arange(batch_size) < num_init
        use_fresh = warm_up | (top_score == -jnp.inf)
        population = jnp.where(use_fresh[:, None], fresh, pool[top_idx])
        return population, state.replace(params=params, opt_state=opt_state)

    def tell(
        state: BananasState, population: jax.Array, fitness: jax.Array
    ) -> tuple[BananasState, dict[str, jax.Array]]:
        check_told(space, population, fitness)
        told = jnp.shape(population)[0]
        if told > max_history:
            raise NasjaxError(f"tell got {told} genotypes, more than max_history ({max_history})")
        slots = (state.num_told + jnp.arange(told)) % max_history
        best = state.best.update(population, fitness)
        new_state = state.replace(
            genotypes=state.genotypes.at[slots].set(jnp.asarray(population, jnp.int32)),
            fitness=state.fitness.at[slots].set(sanitize_fitness(fitness)),
            num_told=state.num_told + told,
            best=best,
        )
        return new_state, tell_metrics(best, fitness)

    # ``init`` and ``ask`` are jitted on their own, so called eagerly they run the same
    # compiled programs as under an outer ``jit`` (which inlines them): the same floats
    # either way (op-by-op, the normal draws and the training differ in the last ulp).
    return Strategy(init=jax.jit(init), ask=jax.jit(ask), tell=tell, batch_size=batch_size)
