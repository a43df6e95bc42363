"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020).

A genotype is ``int32[6]``: the op on each cell edge, edges in the official string order
``0->1, 0->2, 1->2, 0->3, 1->3, 2->3`` and ops in the official order
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``. The dense code of
``to_index`` is the mixed-radix number of the genotype (edge 0 most significant); it is not
the benchmark's own row index, which the tabular evaluator maps through the arch string.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nets.relaxed import RelaxedNetwork
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.decoded import decoded_costs, decoded_measure
from nasjax.spaces.nb201_functional import NB201Functional, to_flax_variables
from nasjax.spaces.nb201_net import EDGES, OPS, NB201Network
from nasjax.spaces.nb201_search_net import nb201_relaxed_network
from nasjax.tasks import get_task

_EXAMPLE = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


@dataclasses.dataclass(frozen=True)
class NB201Space(SearchSpace):
    """The 15,625 cells of NAS-Bench-201: 6 edges, 5 candidate ops each."""

    num_choices: tuple[int, ...] = (len(OPS),) * len(EDGES)

    ops: tuple[str, ...] = OPS
    edges: tuple[tuple[int, int], ...] = EDGES

    name: ClassVar[str] = "nb201"
    mutation_rules: ClassVar[tuple[str, ...]] = ("uniform", "node_edge")

    def mutation_weights(self, rule: str) -> np.ndarray:
        """``"uniform"`` over the 6 edges, or ``"node_edge"``: the rule of the NAS-Bench-201
        reference REA (AutoDL-Projects ``exps/NATS-algos/regularized_ea.py``,
        ``mutate_arch_func``), which picks one of the 3 nodes uniformly, then one of its
        incoming edges: 1/3 for edge 0->1, 1/6 for each edge into node 2, 1/9 for each into
        node 3."""
        if rule != "node_edge":
            return super().mutation_weights(rule)
        fan_in = {dst: sum(d == dst for _, d in self.edges) for _, dst in self.edges}
        nodes = len(fan_in)
        return np.array([1.0 / (nodes * fan_in[dst]) for _, dst in self.edges])

    def to_string(self, genotype: object) -> str:
        """The official arch string, e.g. ``|nor_conv_3x3~0|+|...|+|...|``."""
        g = self.validate(genotype)
        nodes = []
        for node in range(1, 4):
            parts = [f"{OPS[g[e]]}~{src}" for e, (src, dst) in enumerate(EDGES) if dst == node]
            nodes.append("|" + "|".join(parts) + "|")
        return "+".join(nodes)

    def from_string(self, text: str) -> np.ndarray:
        """Parses an official arch string into an ``int32[6]`` genotype.

        Raises:
          NasjaxError: naming the malformed part and what was expected.
        """
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise NasjaxError(
                f"malformed NB201 arch string {text!r}: expected 3 nodes joined by '+', "
                f"e.g. {_EXAMPLE}"
            )
        genotype = np.zeros(len(EDGES), np.int32)
        for node, part in enumerate(nodes, start=1):
            if not (part.startswith("|") and part.endswith("|")):
                raise NasjaxError(f"malformed NB201 arch string {text!r}: node {part!r}")
            entries = part[1:-1].split("|")
            if len(entries) != node:
                raise NasjaxError(
                    f"malformed NB201 arch string {text!r}: node {node} needs {node} inputs, "
                    f"got {part!r}"
                )
            for src, entry in enumerate(entries):
                op, _, given_src = entry.partition("~")
                if op not in OPS:
                    raise NasjaxError(
                        f"unknown op {op!r} in NB201 arch string {text!r}; "
                        f"valid choices: {', '.join(OPS)}"
                    )
                if given_src != str(src):
                    raise NasjaxError(
                        f"malformed NB201 arch string {text!r}: entry {entry!r} of node {node} "
                        f"must read '{op}~{src}'"
                    )
                genotype[EDGES.index((src, node))] = OPS.index(op)
        return genotype

    def cell_paths(self) -> list[tuple[int, ...]]:
        """Every input->output path of the cell as a tuple of edge indices, shortest first:
        ``(3,), (0, 4), (1, 5), (0, 2, 5)`` for NAS-Bench-201's 4-node cell."""
        out_node = max(dst for _, dst in self.edges)
        paths: list[tuple[int, ...]] = []
        stack: list[tuple[int, tuple[int, ...]]] = [(0, ())]
        while stack:
            node, path = stack.pop()
            if node == out_node:
                paths.append(path)
                continue
            for e, (src, dst) in enumerate(self.edges):
                if src == node:
                    stack.append((dst, path + (e,)))
        return sorted(paths, key=lambda p: (len(p), p))

    def path_encoding(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """BANANAS' path encoding (White, Neiswanger & Savani, AAAI 2021), ``float32[..., F]``.

        One binary feature per possible op sequence along an input->output path of the cell
        (lengths 1, 2, 3; ``none`` excluded, since a path through ``none`` carries nothing):
        ``F = 4 + 4**2 + 4**3 = 84``. A feature is 1 when some path of the cell carries that
        op sequence. Jittable, batched over leading axes.
        """
        g = jnp.asarray(genotype, jnp.int32)
        live_ops = [i for i, op in enumerate(self.ops) if op != "none"]
        lut = np.full(len(self.ops), -1, np.int32)
        lut[live_ops] = np.arange(len(live_ops))
        lut_j, n = jnp.asarray(lut), len(live_ops)
        lengths = sorted({len(p) for p in self.cell_paths()})
        offsets = dict(zip(lengths, np.cumsum([0] + [n**k for k in lengths])[:-1].tolist()))
        size = sum(n**k for k in lengths)
        features = jnp.zeros(g.shape[:-1] + (size,), jnp.float32)
        for path in self.cell_paths():
            ops = lut_j[g[..., list(path)]]
            code = offsets[len(path)] + jnp.sum(
                jnp.maximum(ops, 0) * jnp.asarray([n**k for k in range(len(path))]), axis=-1
            )
            alive = jnp.all(ops >= 0, axis=-1)
            features = jnp.maximum(
                features, jax.nn.one_hot(code, size) * alive[..., None].astype(jnp.float32)
            )
        return features

    def chosen_ops(self, genotype: object) -> list[str]:
        """The op names of a genotype's edges, in edge order."""
        return [OPS[int(v)] for v in self.validate(genotype)]

    def decode(
        self,
        genotype: object,
        dataset: str = "cifar10",
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
    ) -> NB201Network:
        """The specialised network of one genotype: only the chosen ops exist.

        Defaults (C=16, N=5) are the benchmark's; parameter counts then equal its own.
        """
        g = self.validate(genotype)
        task = get_task(dataset)
        return NB201Network(
            num_classes=task.num_classes,
            genotype=tuple(int(v) for v in g),
            channels=channels,
            cells_per_stage=cells_per_stage,
            ndim=task.ndim,
        )

    def supernet(
        self, dataset: str = "cifar10", *, channels: int = 16, cells_per_stage: int = 5
    ) -> NB201Network:
        """Every candidate op on every edge; called as ``apply(variables, x, arch)``.

        ``arch`` is float ``[6, 5]`` op weights (one-hot for a genotype, softmax for a
        relaxation) or an ``int32[6]`` genotype, which runs only the chosen ops.
        """
        task = get_task(dataset)
        return NB201Network(
            num_classes=task.num_classes,
            genotype=None,
            channels=channels,
            cells_per_stage=cells_per_stage,
            ndim=task.ndim,
        )

    def relaxed(self, dataset: str, mode: str, **size: int) -> RelaxedNetwork:
        """The search network for gradient search under ``mode`` (``darts``, ``gdas``,
        ``pcdarts``); ``size``: ``channels`` (16), ``cells_per_stage`` (5), ``partial_k``
        (4). See :func:`nasjax.spaces.nb201_search_net.nb201_relaxed_network`."""
        return nb201_relaxed_network(dataset, mode, **size)

    def functional(
        self, dataset: str = "cifar10", *, channels: int = 16, cells_per_stage: int = 5
    ) -> NB201Functional:
        """The network as pure ``init`` / ``apply`` functions of an ``int32[6]`` genotype.

        What population training runs: the same network as :meth:`decode` (tested), with
        every op's parameters present and only the chosen op computed on each edge.
        """
        task = get_task(dataset)
        return NB201Functional(
            num_classes=task.num_classes,
            in_features=task.input_shape[-1],
            channels=channels,
            cells_per_stage=cells_per_stage,
            ndim=task.ndim,
        )

    def decoded_variables(
        self, genotype: object, dataset: str, params: Any, state: Any, **size: int
    ) -> dict[str, Any]:
        """One member's trained :meth:`functional` ``params``/``state`` as the variables of
        :meth:`decode` (``{"params", "batch_stats"}``; only the chosen ops' weights)."""
        net = self.functional(dataset, **self.resolve_size(size))
        return to_flax_variables(net, params, state, self.validate(genotype))

    # ------------------------------------------------------------- the space contract
    @property
    def default_size(self) -> dict[str, int]:
        """The benchmark's network: ``channels`` 16, ``cells_per_stage`` 5."""
        return {"channels": 16, "cells_per_stage": 5}

    def costs(self, genotype: object, dataset: str, **size: int) -> dict[str, int]:
        """Exact ``params``, ``macs``, ``flops`` of :meth:`decode` (the benchmark's counts)."""
        return decoded_costs(self, genotype, dataset, **size)

    def measure(self, genotype: object, dataset: str, **options: int) -> dict[str, Any]:
        """Latency and peak memory of :meth:`decode` here (``batch_size``, ``repeats``)."""
        return decoded_measure(self, genotype, dataset, **options)

    def cost_table(self, metric: str, dataset: str, **size: int) -> np.ndarray:
        """``params``, ``macs`` or ``flops`` of all 15,625 cells, by :meth:`to_index`."""
        from nasjax.spaces.nb201_costs import nb201_cost_table

        return nb201_cost_table(metric, dataset, **self.resolve_size(size))

    def latency_table(self, dataset: str, *, load: Any = None, **size: int) -> Any:
        """Per-op latency model measured on this device (``nasjax.spaces.nb201_latency``),
        or read from ``load`` (a JSON file its ``to_json`` wrote) instead of measuring."""
        from nasjax.spaces.nb201_latency import LatencyTable, build_latency_table

        if load is not None:
            return LatencyTable.from_json(load)
        return build_latency_table(self, dataset, **self.resolve_size(size))
