"""Zero-cost proxies of NAS-Bench-201 cells, scored for a whole population in one call.

A zero-cost proxy scores an *untrained* network from one minibatch (or none) in a
forward/backward pass. Definitions follow Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS" (ICLR 2021) and its code (``foresight/pruners/measures``); the score of a
network is the sum over its weights of a per-weight saliency. Which weights: every
convolution and linear *kernel* (the reference's ``nn.Conv2d``/``nn.Linear`` weights: the
stem, each chosen cell convolution, the reductions' ``conv_a``/``conv_b``/``downsample``,
the classifier); not biases, not BatchNorm parameters.

* ``synflow`` (Tanaka et al., NeurIPS 2020): ``sum |theta * dR/dtheta|`` with every
  parameter replaced by ``|theta|``, ``R`` the sum of the logits of one all-ones input
  (batch 1, the dataset's input shape), **BatchNorm removed** (the reference builds the
  network with ``bn=False``, which turns every BatchNorm into the identity) and everything
  in **float64** (the reference calls ``net.double()``; in float32 the product over ~45
  layers of abs-weights overflows at C=16, N=5). Computed under ``jax.enable_x64``, as
  the derivative of ``R`` along the kernels themselves (one forward-mode pass; every term
  of the sum is >= 0, so the sum of ``theta * dR/dtheta`` is that derivative).
* ``snip`` (Lee et al., ICLR 2019): ``sum |theta * dL/dtheta|``, ``L`` the mean
  cross-entropy of the batch.
* ``grad_norm``: the sum over weight tensors of the Euclidean norm of ``dL/dtheta``.
* ``grasp`` (Wang et al., ICLR 2020): ``sum -theta * (H g)``, ``g = dL/dtheta`` over the
  weights, ``H g`` a Hessian-vector product (``jax.jvp`` of the gradient, tangent ``g`` on
  the weights and zero elsewhere), temperature 1, the same batch for both passes.
* ``fisher`` (Theis et al. 2018; Turner et al., ICLR 2020): for every conv/linear output
  channel ``k``, ``0.5 * mean_n (sum_pixels act * dL/dact)^2`` with ``act`` the layer's
  output (before BatchNorm; the linear layer's includes its bias); the reference broadcasts
  each channel's value to the channel's ``fan_in`` weights, so a layer adds
  ``fan_in * sum_k``. ``sum_pixels act * dL/dact`` is the gradient of ``L`` with respect to
  a per-example, per-channel multiplier (one) on ``act``, which is how it is computed.
* ``jacob_cov`` (Mellor et al., arXiv:2006.04647 v1): ``J`` = the gradient of the sum of
  the logits with respect to the input, one row per example; with ``v`` the eigenvalues
  of ``corrcoef(J)``, ``-sum(log(v + 1e-5) + 1 / (v + 1e-5))``.
* ``nwot`` (NASWOT, Mellor et al., ICML 2021, arXiv v2): the log-|determinant| of
  ``K = sum_relu [c c^T + (1 - c)(1 - c)^T]``, ``c`` the binary codes ``input > 0`` of every
  ReLU (each chosen convolution's, the reductions' two and the last one), flattened per
  example: the Hamming-similarity kernel of the activation patterns.
* ``params`` / ``flops``: :func:`nasjax.objectives.nb201_cost_table`, no network run.

Every data-dependent proxy runs the network in training mode (BatchNorm with the batch's
statistics), as the reference does. The final matrix reductions of ``jacob_cov`` and
``nwot`` (correlation, eigenvalues, log-determinant) run on the host in float64, as the
reference's numpy does; ``K`` is exact in float32 (integer counts below 2**24). A score
can be NaN (e.g. ``jacob_cov`` of a network whose output ignores its input); treat NaN
as the worst value. Higher scores predict higher accuracy for every proxy (maximised).

All members share the weights drawn from one key (the zero-cost papers' fixed seed), so
scores differ only by architecture. The population runs under ``lax.map`` (each edge's
``lax.switch`` executes only the chosen op); ``member_batch > 1`` vmaps chunks of members,
which turns each switch into a select over all ops (the one-hot supernet).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from nasjax.errors import NasjaxError, check_choice
from nasjax.evaluation.training import POPULATION_AXIS, population_mesh
from nasjax.nets.layers import Conv
from nasjax.objectives import network_cost
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_costs import nb201_cost_table
from nasjax.spaces.nb201_forward import Layers, Site, forward
from nasjax.spaces.nb201_functional import NB201Functional, to_flax_variables
from nasjax.tasks import get_task

PROXIES = (
    "synflow",
    "snip",
    "grad_norm",
    "grasp",
    "fisher",
    "jacob_cov",
    "nwot",
    "params",
    "flops",
)
"""Every proxy name; all are maximised."""

DATA_FREE = ("synflow", "params", "flops")
"""Proxies that need no minibatch (``x`` and ``y`` may be ``None``)."""

_WEIGHT_NAMES = frozenset({"kernel", "stem", "conv_a", "conv_b", "downsample"})
_JACOB_K = 1e-5
_SPACE = NB201Space()

Tree = Any


# ------------------------------------------------------------------------ saliencies
def _is_weight(path: tuple) -> bool:
    return getattr(path[-1], "key", None) in _WEIGHT_NAMES


def _weights(tree: Tree) -> list[jnp.ndarray]:
    """The conv/linear kernels of a parameter tree (functional or decoded names)."""
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if _is_weight(path)]


def _weight_tangent(params: Tree, grads: Tree) -> Tree:
    """``grads`` on the kernels, zeros elsewhere (GraSP's Hessian is over the weights)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, g: g if _is_weight(path) else jnp.zeros_like(g), grads
    )


def _saliency(proxy: str, params: Tree, grads: Tree) -> jnp.ndarray:
    """Sum over kernels of the per-weight saliency of ``proxy`` (``grads`` = H g for grasp)."""
    pairs = zip(_weights(params), _weights(grads))
    if proxy in ("synflow", "snip"):
        terms = [jnp.sum(jnp.abs(w * g)) for w, g in pairs]
    elif proxy == "grad_norm":
        terms = [jnp.sqrt(jnp.sum(jnp.square(g))) for _, g in pairs]
    else:  # grasp
        terms = [-jnp.sum(w * hg) for w, hg in pairs]
    return sum(terms[1:], terms[0])


def _fisher(scale_grads: list[jnp.ndarray], fan_ins: list[int]) -> jnp.ndarray:
    """``sum_layers fan_in * sum_k 0.5 * mean_n g[n, k]^2`` (g: per-example channel grads)."""
    terms = [f * 0.5 * jnp.sum(jnp.mean(jnp.square(g), 0)) for g, f in zip(scale_grads, fan_ins)]
    return sum(terms[1:], terms[0])


def _relu_codes(h: jnp.ndarray) -> jnp.ndarray:
    """NASWOT's ``c c^T + (1 - c)(1 - c)^T`` for the binary codes of one ReLU input."""
    c = (h > 0).reshape(h.shape[0], -1).astype(jnp.float32)
    return c @ c.T + (1.0 - c) @ (1.0 - c).T


def _centred_gram(jacobian: jnp.ndarray) -> jnp.ndarray:
    """Covariance (unnormalised) of the per-example rows of an input Jacobian."""
    j = jacobian.reshape(jacobian.shape[0], -1)
    j = j - jnp.mean(j, axis=1, keepdims=True)
    return j @ j.T


def _finish(proxy: str, raw: np.ndarray) -> np.ndarray:
    """Host float64 reduction of ``raw`` (scores, or ``[P, B, B]`` matrices) to ``[P]``."""
    raw = np.asarray(raw, np.float64)
    if proxy == "nwot":
        return np.linalg.slogdet(raw)[1]
    if proxy != "jacob_cov":
        return raw
    scores = np.full(raw.shape[0], np.nan)
    for i, gram in enumerate(raw):
        d = np.sqrt(np.diag(gram))
        if not (np.all(np.isfinite(gram)) and np.all(d > 0)):
            continue  # a constant Jacobian row: the correlation is undefined
        v = np.linalg.eigvalsh(gram / np.outer(d, d))
        scores[i] = -np.sum(np.log(v + _JACOB_K) + 1.0 / (v + _JACOB_K))
    return scores


# ----------------------------------------------------- the functional network, probed
def _scaled(y: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """``y[B, ..., C]`` times per-example, per-channel multipliers ``s[B, C]``."""
    return y * s.reshape(s.shape[:1] + (1,) * (y.ndim - 2) + s.shape[-1:])


class _ProbedLayers(Layers):
    """The walk's hooks for the proxies: BN on batch statistics, every conv/linear output
    times per-example, per-channel scales ``s`` (a tree shaped like the parameters, ones
    leave it unchanged), NASWOT's ``K`` of every ReLU input added to ``state["codes"]``."""

    def __init__(self, scales: Tree) -> None:
        super().__init__(train=True)
        self.scales = scales

    def _scale(self, y: jnp.ndarray, site: Site) -> jnp.ndarray:
        s = self.scales
        for name in site.path:
            s = s[name]
        return _scaled(y, s)

    def conv(
        self, x: jnp.ndarray, kernel: jnp.ndarray, site: Site, s: Tree, signed: bool, stride: int
    ) -> tuple[jnp.ndarray, Tree]:
        """The conv's output, scaled."""
        y, s = super().conv(x, kernel, site, s, signed, stride)
        return self._scale(y, site), s

    def tap(self, x: jnp.ndarray, site: Site, s: Tree) -> Tree:
        """Adds the ReLU input's codes to the container's ``codes``."""
        return {**s, "codes": s["codes"] + _relu_codes(x)}

    def dense(self, x: jnp.ndarray, params: Tree, site: Site, s: Tree) -> tuple[jnp.ndarray, Tree]:
        """The logits (bias included), scaled."""
        y, s = super().dense(x, params, site, s)
        return self._scale(y, site), s


def _with_codes(state: Tree, batch: int) -> Tree:
    """``state`` with zero ``codes [B, B]`` in every container a ReLU input is tapped in."""
    zero = jnp.zeros((batch, batch), jnp.float32)
    out = {**state, "codes": zero}
    for name, block in state.items():
        if name.startswith("reduction_"):
            out[name] = {**block, "codes": zero}
        elif name.startswith("cell_"):
            out[name] = {e: {**edge, "codes": zero} for e, edge in block.items()}
    return out


def _probed_apply(
    net: NB201Functional, params: Tree, state: Tree, x: jnp.ndarray, genotype: jnp.ndarray, s: Tree
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``net.apply(..., train=True)``'s logits, each conv/linear output multiplied by ``s``
    (per example and channel), and NASWOT's ``K`` summed over every ReLU: the walk of
    :func:`nasjax.spaces.nb201_forward.forward` with :class:`_ProbedLayers`."""
    probed = _ProbedLayers(s)
    state = _with_codes(state, x.shape[0])
    logits, new = forward(probed, params, state, x, genotype, net.cells_per_stage)
    codes = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(new)
        if getattr(path[-1], "key", None) == "codes"
    ]
    return logits, sum(codes[1:], codes[0])


class _NoBatchNormLayers(Layers):
    """The plain walk with every BatchNorm removed (synflow's ``bn=False`` network)."""

    def bn(self, y: jnp.ndarray, params: Tree, stats: Tree) -> tuple[jnp.ndarray, Tree]:
        """The identity; the statistics are kept."""
        del params
        return y, stats


_NO_BN = _NoBatchNormLayers(train=False)


def _unit_scales(params: Tree, batch: int) -> Tree:
    """Ones ``[batch, out_channels]`` at every kernel of ``params``, ``None`` elsewhere."""
    return jax.tree_util.tree_map_with_path(
        lambda path, w: jnp.ones((batch, w.shape[-1]), w.dtype) if _is_weight(path) else None,
        params,
    )


# ------------------------------------------------------------------ one member, traced
def _member_raw(
    proxy: str,
    net: NB201Functional,
    params: Tree,
    state: Tree,
    genotype: jnp.ndarray,
    x: jnp.ndarray | None,
    y: jnp.ndarray | None,
) -> jnp.ndarray:
    """``proxy``'s score of one traced genotype (a ``[B, B]`` matrix for jacob_cov, nwot)."""
    if proxy == "synflow":
        # sum |theta * dR/dtheta| = sum theta * dR/dtheta (every factor is >= 0: abs
        # weights, an all-ones input, ReLUs, pools and sums) = the derivative of R along
        # the kernels themselves: one forward-mode pass, no backward pass and no weight
        # gradients. Equal to the gradient form (the decoded reference path) to rounding.
        p64 = jax.tree_util.tree_map(lambda a: jnp.abs(a).astype(jnp.float64), params)
        ones = jnp.ones((1,) + x.shape[1:], jnp.float64)
        flow = lambda p: jnp.sum(forward(_NO_BN, p, state, ones, genotype, net.cells_per_stage)[0])
        return jax.jvp(flow, (p64,), (_weight_tangent(p64, p64),))[1]
    if proxy in ("fisher", "nwot"):
        scales = _unit_scales(params, x.shape[0])
        if proxy == "nwot":
            return _probed_apply(net, params, state, x, genotype, scales)[1]

        def scaled_loss(s: Tree) -> jnp.ndarray:
            logits, _ = _probed_apply(net, params, state, x, genotype, s)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        fan_ins = [int(np.prod(w.shape[:-1])) for w in _weights(params)]
        return _fisher(jax.tree_util.tree_leaves(jax.grad(scaled_loss)(scales)), fan_ins)
    if proxy == "jacob_cov":
        out_sum = lambda x: jnp.sum(net.apply(params, state, x, genotype, True)[0])
        return _centred_gram(jax.grad(out_sum)(x))

    def loss(p: Tree) -> jnp.ndarray:
        logits, _ = net.apply(p, state, x, genotype, True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    if proxy == "grasp":
        tangent = jax.lax.stop_gradient(_weight_tangent(params, grads))
        grads = jax.jvp(jax.grad(loss), (params,), (tangent,))[1]
    return _saliency(proxy, params, grads)


@functools.partial(jax.jit, static_argnames=("proxy", "net", "member_batch", "mesh"))
def _population_raw(
    proxy: str,
    net: NB201Functional,
    member_batch: int,
    mesh: Mesh,
    params: Tree,
    state: Tree,
    genotypes: jnp.ndarray,
    x: jnp.ndarray,
    y: jnp.ndarray | None,
) -> jnp.ndarray:
    """Raw scores of ``genotypes`` (a multiple of the mesh size), each device looping over
    its share of the members (the population trainer's layout)."""

    def local(genotypes: jnp.ndarray, params: Tree, state: Tree, x: Any, y: Any) -> jnp.ndarray:
        member = lambda g: _member_raw(proxy, net, params, state, g, x, y)
        # batch_size=1 would vmap a size-1 axis, turning each switch into a select.
        size = None if member_batch == 1 else member_batch
        return jax.lax.map(member, genotypes, batch_size=size)

    members, shared = PartitionSpec(POPULATION_AXIS), PartitionSpec()
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(members, shared, shared, shared, shared),
        out_specs=members,
        check_vma=False,  # as the population trainer: switch branches differ in varying axes
    )(genotypes, params, state, x, y)


def _population_layout(genotypes: np.ndarray) -> tuple[Mesh, np.ndarray]:
    """A mesh over this process's devices (at most one per member) and ``genotypes``
    padded with copies of the first to a multiple of its size (their scores dropped)."""
    size = genotypes.shape[0]
    mesh = population_mesh(jax.local_devices()[:size])
    fill = -size % mesh.size
    return mesh, np.concatenate([genotypes, np.repeat(genotypes[:1], fill, 0)])


@functools.cache
def _init_fn(net: NB201Functional) -> Any:
    return jax.jit(net.init)


# --------------------------------------------------------------------------- checks
def _check_inputs(
    proxy: str,
    genotypes: Any,
    dataset: str,
    x: Any,
    y: Any,
    channels: int,
    cells_per_stage: int,
    member_batch: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    check_choice("proxy", proxy, PROXIES)
    task = get_task(dataset)
    g = np.asarray(genotypes)
    if g.ndim != 2 or g.shape[0] < 1:
        raise NasjaxError(f"genotypes must be int [P, 6] with P >= 1, got shape {g.shape}")
    for row in g:
        _SPACE.validate(row)
    for name, value in (
        ("channels", channels),
        ("cells_per_stage", cells_per_stage),
        ("member_batch", member_batch),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise NasjaxError(f"{name} must be an integer >= 1, got {value!r}")
    if proxy in DATA_FREE:
        return g.astype(np.int32), None, None
    if x is None or y is None:
        raise NasjaxError(f"proxy {proxy!r} needs a minibatch x, y; data-free: {DATA_FREE}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 1 + len(task.input_shape) or x.shape[1:] != task.input_shape or x.shape[0] < 2:
        raise NasjaxError(
            f"x must be float [B, {', '.join(map(str, task.input_shape))}] with B >= 2 for "
            f"{dataset!r}, got shape {x.shape}"
        )
    if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise NasjaxError(
            f"y must be int [{x.shape[0]}] (one label per x), got {y.shape} {y.dtype}"
        )
    if y.min() < 0 or y.max() >= task.num_classes:
        raise NasjaxError(f"labels of y must lie in 0..{task.num_classes - 1} for {dataset!r}")
    return g.astype(np.int32), x.astype(np.float32), y.astype(np.int32)


# ------------------------------------------------------------------------ public API
def score_population(
    proxy: str,
    genotypes: Any,
    dataset: str,
    x: Any | None,
    y: Any | None,
    key: jax.Array,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
    member_batch: int = 1,
) -> np.ndarray:
    """Scores P NAS-Bench-201 cells with one zero-cost proxy in one compiled call.

    Definitions and conventions are in the module docstring (Abdelfattah et al., ICLR
    2021). The network is ``NB201Space().functional(dataset, ...)`` with the genotype
    traced; its weights are drawn once from ``key`` and shared by every member, so scores
    differ only by architecture. The compiled program is cached per
    ``(proxy, dataset, channels, cells_per_stage, P, B, member_batch)``.

    Args:
      proxy: one of :data:`PROXIES`.
      genotypes: ``int[P, 6]`` cells.
      dataset: a name of ``nasjax.tasks.TASKS``.
      x: ``float[B, *input_shape]`` minibatch (``B >= 2``); ignored by :data:`DATA_FREE`
        proxies (synflow uses one all-ones input).
      y: ``int[B]`` labels; ignored by :data:`DATA_FREE` proxies.
      key: PRNG key of the shared initial weights.
      channels: ``C`` of the first stage (16 in the benchmark).
      cells_per_stage: ``N`` (5 in the benchmark).
      member_batch: members vmapped together inside ``lax.map`` (1 = loop over members).

    Returns:
      ``float64[P]`` scores, higher predicting higher accuracy; NaN is the worst.

    Raises:
      NasjaxError: an unknown proxy or dataset, malformed genotypes, a missing or
        misshapen minibatch.
    """
    g, x, y = _check_inputs(
        proxy, genotypes, dataset, x, y, channels, cells_per_stage, member_batch
    )
    if proxy in ("params", "flops"):
        table = nb201_cost_table(proxy, dataset, int(channels), int(cells_per_stage))
        return table[np.asarray(_SPACE.to_index(g))].astype(np.float64)
    net, params, state, x = _network_inputs(proxy, dataset, x, key, channels, cells_per_stage)
    with _precision(proxy):
        mesh, padded = _population_layout(g)
        raw = _population_raw(proxy, net, int(member_batch), mesh, params, state, padded, x, y)
        return _finish(proxy, np.asarray(raw)[: g.shape[0]])


def _precision(proxy: str) -> Any:
    """float64 for synflow (module docstring); the caller's precision for the others."""
    return jax.enable_x64(True) if proxy == "synflow" else contextlib.nullcontext()


def _network_inputs(
    proxy: str, dataset: str, x: Any, key: jax.Array, channels: int, cells_per_stage: int
) -> tuple[NB201Functional, Tree, Tree, Any]:
    """The functional network, its shared weights from ``key``, and the input (synflow:
    an all-ones example, of which only the shape is used)."""
    net = _SPACE.functional(dataset, channels=int(channels), cells_per_stage=int(cells_per_stage))
    params, state = _init_fn(net)(key)
    if proxy == "synflow":
        x = np.ones((1,) + get_task(dataset).input_shape, np.float32)
    return net, params, state, x


class ScoringProgram(NamedTuple):
    """A population scorer compiled ahead of time by :func:`compile_scoring`.

    ``run(genotypes)`` scores ``int[size, 6]`` cells as :func:`score_population` does (the
    same weights and minibatch), without compiling again; ``compile_s`` is the trace and
    compile time.
    """

    compiled: Any
    proxy: str
    size: int
    inputs: tuple
    compile_s: float

    def run(self, genotypes: Any) -> np.ndarray:
        """``float64[size]`` scores of ``genotypes`` (higher predicts higher accuracy)."""
        g = np.asarray(genotypes)
        if g.shape != (self.size, 6):
            raise NasjaxError(f"this program scores int [{self.size}, 6] cells, got {g.shape}")
        for row in g:
            _SPACE.validate(row)
        params, state, x, y = self.inputs
        padded = _population_layout(g.astype(np.int32))[1]
        with _precision(self.proxy):
            raw = self.compiled(params, state, padded, x, y)
            return _finish(self.proxy, np.asarray(raw)[: self.size])


def compile_scoring(
    proxy: str,
    size: int,
    dataset: str,
    x: Any | None,
    y: Any | None,
    key: jax.Array,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
    member_batch: int = 1,
) -> ScoringProgram:
    """Traces and compiles :func:`score_population`'s program for ``size`` cells.

    The arguments are :func:`score_population`'s, with the population size instead of the
    genotypes (any ``size`` valid cells can then be scored). ``params`` and ``flops`` are
    table lookups and have no program.

    Raises:
      NasjaxError: as :func:`score_population`; also for ``params``/``flops``.
    """
    placeholder = np.zeros((max(int(size), 1), 6), np.int32)
    g, x, y = _check_inputs(
        proxy, placeholder, dataset, x, y, channels, cells_per_stage, member_batch
    )
    if proxy in ("params", "flops"):
        raise NasjaxError(f"proxy {proxy!r} is a table lookup; it has no program to compile")
    start = time.perf_counter()
    net, params, state, x = _network_inputs(proxy, dataset, x, key, channels, cells_per_stage)
    with _precision(proxy):
        mesh, padded = _population_layout(g)
        lowered = _population_raw.lower(
            proxy, net, int(member_batch), mesh, params, state, padded, x, y
        )
        compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    return ScoringProgram(compiled, proxy, g.shape[0], (params, state, x, y), compile_s)


def score_one(
    proxy: str,
    genotype: Any,
    dataset: str,
    x: Any | None,
    y: Any | None,
    key: jax.Array,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
) -> float:
    """:func:`score_population` of one ``int[6]`` genotype, as a Python float."""
    g = np.asarray(genotype)[None]
    scores = score_population(
        proxy, g, dataset, x, y, key, channels=channels, cells_per_stage=cells_per_stage
    )
    return float(scores[0])


# ------------------------------------------------- reference path: the decoded network
def _decoded_raw(
    proxy: str, decoded: nn.Module, variables: Tree, x: jnp.ndarray | None, y: Any
) -> jnp.ndarray:
    """``proxy`` on a decoded Flax network, with flax interceptors as the reference's hooks."""
    if proxy == "synflow":

        def no_bn(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
            if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
                return args[0]  # the reference's bn=False: BatchNorm.forward = identity
            return next_fun(*args, **kwargs)

        p64 = jax.tree_util.tree_map(lambda a: jnp.abs(a).astype(jnp.float64), variables["params"])
        ones = jnp.ones((1,) + x.shape[1:], jnp.float64)

        def flow(p: Tree) -> jnp.ndarray:
            with nn.intercept_methods(no_bn):
                return jnp.sum(decoded.apply({"params": p, "batch_stats": {}}, ones))

        return _saliency(proxy, p64, jax.grad(flow)(p64))

    def forward(p: Tree, x: jnp.ndarray, interceptor: Any = None) -> jnp.ndarray:
        v = {"params": p, "batch_stats": variables["batch_stats"]}
        if interceptor is None:
            return decoded.apply(v, x, train=True, mutable=["batch_stats"])[0]
        with nn.intercept_methods(interceptor):
            return decoded.apply(v, x, train=True, mutable=["batch_stats"])[0]

    params = variables["params"]
    loss = lambda p, **kw: optax.softmax_cross_entropy_with_integer_labels(
        forward(p, x, **kw), y
    ).mean()
    if proxy == "nwot":
        codes: list[jnp.ndarray] = []

        def relu_inputs(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__":
                if type(context.module).__name__ == "ReLUConvBN":
                    codes.append(_relu_codes(args[0]))
                elif context.module.name == "last_bn":
                    codes.append(_relu_codes(out))
            return out

        forward(params, x, relu_inputs)
        return sum(codes[1:], codes[0])
    if proxy == "fisher":
        return _decoded_fisher(forward, params, x, y)
    if proxy == "jacob_cov":
        return _centred_gram(jax.grad(lambda x: jnp.sum(forward(params, x)))(x))
    grads = jax.grad(loss)(params)
    if proxy == "grasp":
        tangent = jax.lax.stop_gradient(_weight_tangent(params, grads))
        grads = jax.jvp(jax.grad(loss), (params,), (tangent,))[1]
    return _saliency(proxy, params, grads)


def _decoded_fisher(forward: Any, params: Tree, x: jnp.ndarray, y: Any) -> jnp.ndarray:
    """Fisher on the decoded network: a per-example, per-channel multiplier on every
    ``Conv``/``Dense`` output, keyed by module path, and the loss's gradient for each."""
    layers: dict[tuple, tuple[int, int]] = {}  # path -> (fan_in, out channels)

    def tap(scales: dict | None) -> Any:
        def interceptor(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
            out = next_fun(*args, **kwargs)
            if not (
                isinstance(context.module, (Conv, nn.Dense)) and context.method_name == "__call__"
            ):
                return out
            path = context.module.path
            if scales is None:  # discovery pass
                size = getattr(context.module, "kernel_size", 1)
                layers[path] = (args[0].shape[-1] * size ** (args[0].ndim - 2), out.shape[-1])
                return out
            return _scaled(out, scales[path])

        return interceptor

    forward(params, x, tap(None))
    scales = {p: jnp.ones((x.shape[0], c), jnp.float32) for p, (_, c) in layers.items()}

    def loss(s: dict) -> jnp.ndarray:
        out = forward(params, x, tap(s))
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    grads = jax.grad(loss)(scales)
    return _fisher([grads[p] for p in layers], [layers[p][0] for p in layers])


def score_decoded(
    proxy: str,
    genotypes: Any,
    dataset: str,
    x: Any | None,
    y: Any | None,
    key: jax.Array,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
) -> np.ndarray:
    """The check of :func:`score_population`: each cell's specialised Flax network.

    ``space.decode(g)`` with the weights ``to_flax_variables`` exports from the same
    functional initialisation, one genotype at a time, without ``lax.switch``; the
    reference's hooks become flax method interceptors (BatchNorm bypassed for synflow,
    ReLU inputs recorded for nwot, layer outputs tapped for fisher). Runs eagerly, cell
    after cell; meant for tests. ``params``/``flops`` count the decoded network directly.
    """
    g, x, y = _check_inputs(proxy, genotypes, dataset, x, y, channels, cells_per_stage, 1)
    if proxy in ("params", "flops"):
        input_shape = get_task(dataset).input_shape
        return np.array(
            [
                network_cost(
                    _SPACE.decode(row, dataset, channels=channels, cells_per_stage=cells_per_stage),
                    input_shape,
                )[proxy]
                for row in g
            ],
            np.float64,
        )
    net = _SPACE.functional(dataset, channels=int(channels), cells_per_stage=int(cells_per_stage))
    params, state = _init_fn(net)(key)
    if proxy == "synflow":
        x = np.ones((1,) + get_task(dataset).input_shape, np.float32)
    raws = []
    for row in g:  # eagerly: one compile per cell would cost more than it saves
        decoded = _SPACE.decode(row, dataset, channels=channels, cells_per_stage=cells_per_stage)
        variables = to_flax_variables(net, params, state, row)
        with jax.enable_x64(proxy == "synflow"):
            raws.append(np.asarray(_decoded_raw(proxy, decoded, variables, x, y)))
    return _finish(proxy, np.stack(raws))
