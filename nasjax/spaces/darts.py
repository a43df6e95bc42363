"""The DARTS cell search space (Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019).

A network stacks a normal and a reduction cell. Each cell has two input states (the
outputs of the two previous cells, states 0 and 1) and ``nodes`` intermediate nodes
(4 in the paper); node ``i`` (state ``i + 2``) sums two ops applied to two earlier states.
The cell outputs the concatenation of all intermediate nodes. Candidate ops, in the
reference order (``OPS``): ``none, max_pool_3x3, avg_pool_3x3, skip_connect,
sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5``; a discrete genotype uses the 7
ops after ``none`` (``GENOTYPE_OPS``), as every published genotype does.

Genotype layout, ``int32[2 * nodes * 4]`` (32 entries for 4 nodes)::

    g[((cell * nodes + i) * 2 + j) * 2 + 0]  input state of input j of node i, 0..i+1
    g[((cell * nodes + i) * 2 + j) * 2 + 1]  its op, an index into GENOTYPE_OPS, 0..6

with ``cell`` 0 the normal and 1 the reduction cell, inputs ``j`` in the order of the
paper's list (the order in which the DARTS rule picked them, strongest first). Every value
in range is a valid architecture (both inputs of a node may read the same state, as in
NASNet's cells), so ``sample``, ``mutate`` and ``neighbours`` only produce valid genotypes.

Strings are the paper's genotype notation (``cnn/genotypes.py`` of the reference code)::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

or a published name from ``PUBLISHED`` (``DARTS_V1``, ``DARTS_V2``, ``PC_DARTS``).
PC-DARTS: Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient
Architecture Search", ICLR 2020.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, ClassVar

import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nets.relaxed import RelaxedNetwork
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.darts_net import GENOTYPE_OPS, OPS, DartsNetwork
from nasjax.spaces.darts_search_net import darts_relaxed_network
from nasjax.spaces.decoded import decoded_costs, decoded_measure
from nasjax.tasks import get_task


def _num_choices(nodes: int) -> tuple[int, ...]:
    per_cell = []
    for i in range(nodes):
        per_cell += [i + 2, len(GENOTYPE_OPS)] * 2
    return tuple(per_cell) * 2


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

PUBLISHED: dict[str, str] = {
    # Liu et al. 2019, first order (cnn/genotypes.py of the reference code).
    "DARTS_V1": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
        "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], "
        "reduce_concat=[2, 3, 4, 5])"
    ),
    # Liu et al. 2019, second order: the paper's DARTS cell (2.76 % CIFAR-10 error).
    "DARTS_V2": (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
        "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
        "reduce_concat=[2, 3, 4, 5])"
    ),
    # Xu et al. 2020, PC_DARTS_cifar of the PC-DARTS code (2.57 % error, 3.6M params).
    "PC_DARTS": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), "
        "('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), "
        "('dil_conv_3x3', 1)], normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_5x5', 1), "
        "('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], "
        "reduce_concat=[2, 3, 4, 5])"
    ),
}
"""Published genotypes accepted by name as arch strings."""


@dataclasses.dataclass(frozen=True)
class DartsSpace(SearchSpace):
    """DARTS cells: per cell type and node, two (input state, op) pairs.

    Attributes:
      nodes: intermediate nodes per cell (4 in the paper); ``num_choices`` follows it.
    """

    num_choices: tuple[int, ...] = _num_choices(4)
    nodes: int = 4
    ops: tuple[str, ...] = OPS

    name: ClassVar[str] = "darts"
    instead: ClassVar[dict[str, str]] = {
        **SearchSpace.instead,
        "functional": "search it with experiments/darts_search.py (gradient search)",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise NasjaxError(f"DARTS cells need nodes >= 1, got {self.nodes!r}")
        object.__setattr__(self, "num_choices", _num_choices(self.nodes))

    # ------------------------------------------------------------ genotype <-> cells
    def cells(self, genotype: object) -> tuple[tuple[tuple[str, int], ...], ...]:
        """``(normal, reduce)``, each ``2 * nodes`` ``(op name, input state)`` pairs."""
        g = self.validate(genotype).reshape(2, 2 * self.nodes, 2)
        return tuple(tuple((GENOTYPE_OPS[op], int(src)) for src, op in cell.tolist()) for cell in g)

    def chosen_ops(self, genotype: object) -> list[str]:
        """The op names of the genotype's ``4 * nodes`` edges, normal cell first."""
        return [op for cell in self.cells(genotype) for op, _ in cell]

    def from_cells(self, normal: object, reduce: object) -> np.ndarray:
        """The genotype of two lists of ``(op name, input state)`` pairs (paper order).

        Raises:
          NasjaxError: naming a wrong length, an unknown op or an unreachable input.
        """
        genotype = []
        for name, cell in (("normal", normal), ("reduce", reduce)):
            if not isinstance(cell, (list, tuple)) or len(cell) != 2 * self.nodes:
                raise NasjaxError(
                    f"{name} cell must list {2 * self.nodes} (op, input) pairs "
                    f"(2 per node), got {cell!r}; e.g. {PUBLISHED['DARTS_V2']}"
                )
            for k, pair in enumerate(cell):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise NasjaxError(
                        f"{name} cell entry {k} must be an (op, input) pair such as "
                        f"('sep_conv_3x3', 0), got {pair!r}"
                    )
                op, src = pair
                if op not in GENOTYPE_OPS:
                    hint = " ('none' is never chosen by the DARTS rule)" if op == "none" else ""
                    raise NasjaxError(
                        f"unknown op {op!r} in the {name} cell{hint}; valid choices: "
                        f"{', '.join(GENOTYPE_OPS)}"
                    )
                node = k // 2
                if not isinstance(src, int) or not 0 <= src < node + 2:
                    raise NasjaxError(
                        f"{name} cell entry {k} ({op!r}, {src!r}): node {node} "
                        f"(state {node + 2}) can read states 0..{node + 1} only"
                    )
                genotype += [src, GENOTYPE_OPS.index(op)]
        return np.asarray(genotype, np.int32)

    # ------------------------------------------------------------ strings
    def to_string(self, genotype: object) -> str:
        """The paper's notation, ``Genotype(normal=[...], normal_concat=[...], ...)``."""
        normal, reduce = self.cells(genotype)
        concat = list(range(2, self.nodes + 2))

        def fmt(cell: tuple[tuple[str, int], ...]) -> str:
            return "[" + ", ".join(f"('{op}', {src})" for op, src in cell) + "]"

        return (
            f"Genotype(normal={fmt(normal)}, normal_concat={concat}, "
            f"reduce={fmt(reduce)}, reduce_concat={concat})"
        )

    def from_string(self, text: str) -> np.ndarray:
        """Parses a published name (``PUBLISHED``) or the paper's ``Genotype(...)``.

        Raises:
          NasjaxError: naming the problem and showing an example of the notation.
        """
        text = text.strip()
        if text in PUBLISHED:
            text = PUBLISHED[text]
        fields = _parse_genotype_call(text)
        concat = list(range(2, self.nodes + 2))
        for name in ("normal_concat", "reduce_concat"):
            if fields[name] != concat:
                raise NasjaxError(
                    f"{name}={fields[name]!r} in {text!r}: this space concatenates every "
                    f"intermediate node, {name}={concat}"
                )
        return self.from_cells(fields["normal"], fields["reduce"])

    # ------------------------------------------------------------ networks
    def decode(
        self,
        genotype: object,
        dataset: str = "cifar10",
        *,
        channels: int = 36,
        cells_per_stage: int = 6,
        layers: int | None = None,
        auxiliary: bool = False,
    ) -> DartsNetwork:
        """The evaluation network of one genotype (``NetworkCIFAR`` of the reference).

        Defaults are the paper's CIFAR-10 evaluation network (C=36, 20 cells); its
        parameter count (auxiliary head excluded, :func:`darts_net.count_params_no_aux`)
        equals the reference implementation's.

        Args:
          genotype: ``int32[D]`` of this space.
          dataset: one of ``nasjax.tasks.TASKS`` (input shape, classes).
          channels: ``C`` of the first stage.
          cells_per_stage: ``N`` normal cells per stage, ``layers = 3 * N + 2`` cells in
            all (the NB201-style size the CLI passes; 6 gives the paper's 20).
          layers: if given, the number of cells instead (any ``layers``, as in the
            reference); reduction cells sit at ``layers//3`` and ``2*layers//3``.
          auxiliary: add the auxiliary head (its logits are sown, see ``DartsNetwork``).
        """
        g = self.validate(genotype)
        _check_size(channels=channels, cells_per_stage=cells_per_stage)
        if layers is None:
            layers = 3 * cells_per_stage + 2
        _check_size(layers=layers)
        task = get_task(dataset)
        return DartsNetwork(
            num_classes=task.num_classes,
            genotype=tuple(int(v) for v in g),
            channels=channels,
            layers=layers,
            auxiliary=auxiliary,
            nodes=self.nodes,
            ndim=task.ndim,
        )

    def relaxed(self, dataset: str, mode: str, **size: int) -> RelaxedNetwork:
        """The search supernet for gradient search under ``mode`` (``darts``, ``gdas``,
        ``pcdarts``); ``size``: ``channels`` (16), ``layers`` (8) or ``cells_per_stage``
        (``layers = 3 N + 2``), ``partial_k`` (4). See
        :func:`nasjax.spaces.darts_search_net.darts_relaxed_network`."""
        if "cells_per_stage" in size:
            n = size.pop("cells_per_stage")
            size["layers"] = 3 * n + 2
        return darts_relaxed_network(dataset, mode, nodes=self.nodes, **size)

    # ------------------------------------------------------------ the space contract
    @property
    def default_size(self) -> dict[str, int]:
        """The paper's evaluation network: ``channels`` 36, ``cells_per_stage`` 6 (20 cells)."""
        return {"channels": 36, "cells_per_stage": 6}

    def costs(self, genotype: object, dataset: str, **size: int) -> dict[str, int]:
        """Exact ``params``, ``macs``, ``flops`` of :meth:`decode` (auxiliary head off)."""
        return decoded_costs(self, genotype, dataset, **size)

    def measure(self, genotype: object, dataset: str, **options: int) -> dict[str, Any]:
        """Latency and peak memory of :meth:`decode` here (``batch_size``, ``repeats``)."""
        return decoded_measure(self, genotype, dataset, **options)


def _check_size(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise NasjaxError(f"{name} must be an integer >= 1, got {value!r}")


_EXAMPLE = PUBLISHED["DARTS_V2"]


def _parse_genotype_call(text: str) -> dict[str, object]:
    """The four fields of ``Genotype(normal=..., normal_concat=..., reduce=...,
    reduce_concat=...)`` as Python values (literals and ``range(a, b)`` only)."""
    bad = f"not a DARTS genotype {text!r}: expected the paper's notation, e.g. {_EXAMPLE}"
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise NasjaxError(bad) from None
    if not (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name)
        and tree.func.id == "Genotype"
    ):
        raise NasjaxError(bad)
    if len(tree.args) > len(_FIELDS):
        raise NasjaxError(f"{bad} (too many positional fields)")
    nodes = dict(zip(_FIELDS, tree.args))
    for keyword in tree.keywords:
        if keyword.arg not in _FIELDS or keyword.arg in nodes:
            raise NasjaxError(
                f"{bad} (unexpected or repeated field {keyword.arg!r}; fields: "
                f"{', '.join(_FIELDS)})"
            )
        nodes[keyword.arg] = keyword.value
    missing = [f for f in _FIELDS if f not in nodes]
    if missing:
        raise NasjaxError(f"{bad} (missing {', '.join(missing)})")
    return {name: _literal(node, name, bad) for name, node in nodes.items()}


def _literal(node: ast.expr, name: str, bad: str) -> object:
    """A literal value, or ``list(range(a, b))`` for a ``range(a, b)`` call."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
    ):
        args = [_literal(a, name, bad) for a in node.args]
        if 1 <= len(args) <= 3 and all(isinstance(a, int) for a in args):
            return list(range(*args))
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise NasjaxError(f"{bad} (field {name} is not a literal)") from None
    return list(value) if isinstance(value, tuple) and name.endswith("concat") else value
