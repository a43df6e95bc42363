"""REINFORCE with a factorised categorical policy over the decisions of a space.

Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8, 1992; used as a NAS baseline by Zoph & Le
(ICLR 2017) and, in this form, by NAS-Bench-201 (Dong & Yang, ICLR 2020) and NATS-Bench
(Dong et al., TPAMI 2021). This follows their official script (AutoDL-Projects,
``exps/NATS-algos/reinforce.py``): one independent categorical distribution per decision
with logits initialised at ``1e-3 * N(0, 1)``, Adam with learning rate 0.01 on the loss
``-(reward - baseline) * log pi(arch)``, and an exponential-moving-average baseline with
momentum 0.9.

Baseline, as in that script (its ``ExponentialMovingAverage``): the average is
bias-corrected, ``b = num / den`` with ``num <- m * num + (1 - m) * r`` and
``den <- m * den + (1 - m)``, and it is updated with the new reward *before* the loss is
formed. Hence the first reward initialises the baseline (``b = r_1``, so the first step
has zero advantage) and afterwards ``b`` follows ``b <- m * b + (1 - m) * r`` up to the
vanishing correction ``1 - m**t``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import (
    BestSoFar,
    Strategy,
    check_positive_int,
    check_told,
    sanitize_fitness,
    tell_metrics,
)


@struct.dataclass
class ReinforceState:
    """State of :func:`reinforce` (fitness maximised).

    Attributes:
      logits: ``float32[D, max_choices]`` policy logits; entries past a decision's
        ``num_choices`` are never sampled.
      opt_state: Adam's state for ``logits``.
      baseline_num, baseline_den: ``float32[]`` the bias-corrected moving average of
        rewards is ``baseline_num / baseline_den`` (undefined while ``den == 0``).
      best: the best genotype told so far.
    """

    logits: jax.Array
    opt_state: optax.OptState
    baseline_num: jax.Array
    baseline_den: jax.Array
    best: BestSoFar

    @property
    def baseline(self) -> jax.Array:
        """The moving-average reward (NaN before the first finite reward)."""
        return jnp.where(self.baseline_den > 0, self.baseline_num / self.baseline_den, jnp.nan)


def reinforce(
    space: SearchSpace,
    learning_rate: float = 0.01,
    baseline_momentum: float = 0.9,
    init_scale: float = 1e-3,
    batch_size: int = 1,
) -> Strategy:
    """REINFORCE policy-gradient search (NAS-Bench-201's settings by default).

    Fitness is MAXIMISED (the reward); NaN fitness is treated as ``-inf`` for the
    best-so-far record, and non-finite rewards are left out of the policy update (a batch
    with no finite reward leaves the policy, optimiser and baseline unchanged).

    With ``batch_size > 1`` the baseline absorbs the mean finite reward of the batch and
    the loss is the mean over its finite members; ``batch_size=1`` is the official
    sequential algorithm.

    Args:
      space: the search space.
      learning_rate: Adam's learning rate (NAS-Bench-201: 0.01).
      baseline_momentum: ``m`` in ``[0, 1)`` of the moving-average baseline (0.9).
      init_scale: logits start at ``init_scale * N(0, 1)`` drawn from the init key.
      batch_size: architectures sampled per ``ask``.

    Returns:
      A :class:`Strategy` over :class:`ReinforceState`.

    Raises:
      NasjaxError: naming the bad value if a hyper-parameter is out of range.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if not learning_rate > 0:
        raise NasjaxError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not 0 <= baseline_momentum < 1:
        raise NasjaxError(f"baseline_momentum must be in [0, 1), got {baseline_momentum!r}")
    if not init_scale >= 0:
        raise NasjaxError(f"init_scale must be >= 0, got {init_scale!r}")
    optimizer = optax.adam(learning_rate)
    shape = (space.num_decisions, space.max_choices)
    valid = jnp.arange(space.max_choices) < jnp.asarray(space.num_choices)[:, None]

    def log_policy(logits: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(jnp.where(valid, logits, -1e9), axis=-1)

    def init(key: jax.Array) -> ReinforceState:
        logits = init_scale * jax.random.normal(key, shape, jnp.float32)
        return ReinforceState(
            logits=logits,
            opt_state=optimizer.init(logits),
            baseline_num=jnp.zeros((), jnp.float32),
            baseline_den=jnp.zeros((), jnp.float32),
            best=BestSoFar.create(space),
        )

    def ask(key: jax.Array, state: ReinforceState) -> tuple[jax.Array, ReinforceState]:
        logp = log_policy(state.logits)
        g = jax.random.categorical(key, logp, axis=-1, shape=(batch_size, space.num_decisions))
        return g.astype(jnp.int32), state

    def tell(
        state: ReinforceState, population: jax.Array, fitness: jax.Array
    ) -> tuple[ReinforceState, dict[str, jax.Array]]:
        check_told(space, population, fitness)
        population = jnp.asarray(population, jnp.int32)
        reward = sanitize_fitness(fitness)
        finite = jnp.isfinite(reward)
        n = jnp.sum(finite)
        any_finite = n > 0
        mean_r = jnp.sum(jnp.where(finite, reward, 0.0)) / jnp.maximum(n, 1)
        m = baseline_momentum
        num = jnp.where(any_finite, m * state.baseline_num + (1 - m) * mean_r, state.baseline_num)
        den = jnp.where(any_finite, m * state.baseline_den + (1 - m), state.baseline_den)
        baseline = num / jnp.where(den > 0, den, 1.0)
        advantage = jnp.where(finite, reward - baseline, 0.0)

        def loss_fn(logits: jax.Array) -> jax.Array:
            logp = jnp.take_along_axis(log_policy(logits)[None], population[..., None], -1)
            return -jnp.sum(advantage * jnp.sum(logp[..., 0], axis=-1)) / jnp.maximum(n, 1)

        loss, grads = jax.value_and_grad(loss_fn)(state.logits)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.logits)
        logits = optax.apply_updates(state.logits, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(any_finite, a, b), new, old)  # noqa: E731
        best = state.best.update(population, fitness)
        new_state = ReinforceState(
            logits=keep(logits, state.logits),
            opt_state=keep(opt_state, state.opt_state),
            baseline_num=num,
            baseline_den=den,
            best=best,
        )
        metrics = tell_metrics(best, fitness)
        metrics.update(baseline=new_state.baseline, policy_loss=jnp.where(any_finite, loss, 0.0))
        return new_state, metrics

    return Strategy(init=init, ask=ask, tell=tell, batch_size=batch_size)
