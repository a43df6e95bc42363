"""The NAS-Bench-201 black-box searches the way the paper's own scripts run them: the peer
that ``bench_nb201_search.py`` times nasjax against.

Dong & Yang, "NAS-Bench-201", ICLR 2020, Table 5; their scripts (AutoDL-Projects
``exps/NATS-algos/random_wo_share.py``, ``regularized_ea.py``, ``reinforce.py``) work on
architecture objects, draw with Python's ``random`` (REINFORCE: a PyTorch policy), and ask
the benchmark's API for one architecture per step: the arch string is looked up in a
dictionary, the record's metrics for ``hp="12"`` are gathered into a dictionary, and the
search charges its simulated training time. This module does the same on the project's
table (written here, not copied):

* :class:`Cell`: an architecture object, nodes of ``(op, input)`` pairs, with its string;
* :class:`TableAPI`: ``simulate_train_eval(arch)`` per query (string -> index -> record ->
  metrics), and ``test_accuracy(arch)`` for the result: the lean way, a dictionary look-up
  and one small record per query;
* :class:`NatsBenchAPI`: the same two calls answered by the benchmark's own API class,
  ``nats_bench.NATStopology`` (``pip install nats_bench``, the API the scripts call),
  filled from the table: per query it finds the index by the arch string, gathers the
  train / validation / test metrics of a trial into a dictionary and averages the
  trial's costs for the latency, as it does on the real archive;
* :func:`random_search`, :func:`regularized_evolution` (population 10, tournament of 3
  drawn with replacement, the reference's mutation: a node uniformly, then one of its
  incoming edges, then a different op) and :func:`reinforce` (``torch``: logits
  ``1e-3 * N(0, 1)``, Adam lr 0.01, the bias-corrected moving-average baseline, momentum
  0.9), each under the protocol of :mod:`nasjax.search.tabular`: a query counts only if
  the clock after paying its cost is still within the budget, and the first one that does
  not fit ends the search.

Each search returns ``{"test_acc", "best_reward", "num_queries", "time_s"}``.
"""

from __future__ import annotations

import collections
import math
import random

import numpy as np

from nasjax.evaluation.tabular import DATASETS, NB201Table
from nasjax.spaces.nb201 import NB201Space

NODES = 3  # intermediate nodes 1..3; node i has inputs 0..i-1


class Cell:
    """An NB201 cell as the reference's ``CellStructure``: per node, ``(op, input)`` pairs."""

    def __init__(self, nodes: list[list[tuple[str, int]]]) -> None:
        self.nodes = nodes

    def tostr(self) -> str:
        """The official arch string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        return "+".join(
            "|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in self.nodes
        )

    @classmethod
    def random(cls, rng: random.Random, ops: tuple[str, ...]) -> Cell:
        """Every edge's op uniformly at random."""
        return cls(
            [[(rng.choice(ops), src) for src in range(node)] for node in range(1, NODES + 1)]
        )

    def mutated(self, rng: random.Random, ops: tuple[str, ...]) -> Cell:
        """The reference's mutation: a node uniformly, one of its incoming edges uniformly,
        then a different op uniformly."""
        nodes = [list(node) for node in self.nodes]
        node = nodes[rng.randint(0, len(nodes) - 1)]
        edge = rng.randint(0, len(node) - 1)
        op = rng.choice(ops)
        while op == node[edge][0]:
            op = rng.choice(ops)
        node[edge] = (op, node[edge][1])
        return Cell(nodes)


class ArchRecord:
    """One architecture's results, as the API's per-architecture record."""

    def __init__(self, reward: float, test: float, time_s: float) -> None:
        self.reward, self.test, self.time_s = reward, test, time_s

    def get_metrics(self, hp: str) -> dict:
        """The ``hp``-epoch metrics the search reads: accuracy and the training time."""
        if hp != "12":
            raise ValueError(f"this table holds the 12-epoch rewards, not hp={hp!r}")
        return {"accuracy": self.reward, "time": self.time_s, "epochs": int(hp)}


class TableAPI:
    """NAS-Bench-201 as the scripts see it: one Python query per searched architecture."""

    def __init__(self, table: NB201Table, dataset: str) -> None:
        space = NB201Space()
        d = DATASETS.index(dataset)
        reward, test, cost = (
            np.asarray(a, np.float64) for a in (table.reward[d], table.test[d], table.cost)
        )
        codes = np.arange(space.size)
        genotypes = np.asarray(space.from_index(codes))
        self.ops = space.ops
        self.index = {space.to_string(g): int(c) for g, c in zip(genotypes, codes)}
        self.records = [
            ArchRecord(float(r), float(t), float(c)) for r, t, c in zip(reward, test, cost)
        ]

    def simulate_train_eval(self, arch: Cell, hp: str = "12") -> tuple[float, float]:
        """``(reward, simulated training seconds)`` of one query."""
        info = self.records[self.index[arch.tostr()]].get_metrics(hp)
        return info["accuracy"], info["time"]

    def test_accuracy(self, arch: Cell) -> float:
        """The 200-epoch test accuracy: the search's result for its best architecture."""
        return self.records[self.index[arch.tostr()]].test


class NatsBenchAPI:
    """:class:`TableAPI`'s two calls through NATS-Bench's own topology API (``nats_bench``).

    The API object is filled in memory (the untimed set-up; the scripts' ``fast_mode``
    would unpickle each architecture's file on its first query, which is slower and not
    counted here). Each architecture gets the records the API reads, as its
    ``ArchResults`` / ``ResultsCount`` classes: for ``hp="12"`` one trial (seed 111) of
    12 epochs on the reward's split, its per-epoch training times summing to the query's
    cost and the reward as the last epoch's validation accuracy; for ``hp="200"`` one
    trial holding the 200-epoch test accuracy. Metrics the table does not hold are NaN,
    and every dataset is charged the CIFAR-10 training time, as in
    :mod:`nasjax.search.tabular`.
    """

    def __init__(self, table: NB201Table, dataset: str) -> None:
        from nats_bench.api_topology import NATStopology
        from nats_bench.api_utils import ArchResults

        space, d = NB201Space(), DATASETS.index(dataset)
        reward, test, cost = (
            np.asarray(a, np.float64) for a in (table.reward[d], table.test[d], table.cost)
        )
        strings = [space.to_string(g) for g in np.asarray(space.from_index(np.arange(space.size)))]
        self.ops = space.ops
        self.name = NATS_NAMES[dataset]
        # CIFAR-10's reward is on its "cifar10-valid" split; the latency is read from the
        # dataset's own 12-epoch record.
        valid_split = "cifar10-valid" if dataset == "cifar10" else self.name
        test_set = "ori-test" if dataset == "cifar10" else "x-test"
        self.api = NATStopology(
            {"meta_archs": strings, "arch2infos": {}, "evaluated_indexes": []}, verbose=False
        )
        for code, arch_str in enumerate(strings):
            twelve = {valid_split: {"x-valid": reward[code]}}
            twelve.setdefault(self.name, {})[test_set] = math.nan
            records = {"12": ArchResults(code, arch_str), "200": ArchResults(code, arch_str)}
            for hp, seed, epochs, train_s, splits in (
                ("12", 111, 12, cost[code], twelve),
                ("200", 777, 200, None, {self.name: {test_set: test[code]}}),
            ):
                for split, accuracies in splits.items():
                    trial = _trial(split, seed, epochs, train_s, accuracies)
                    records[hp].all_results[(split, seed)] = trial
                    records[hp].dataset_seed[split] = [seed]
            self.api.arch2infos_dict[code] = records
            self.api.evaluated_indexes.add(code)

    def simulate_train_eval(self, arch: Cell, hp: str = "12") -> tuple[float, float]:
        """``(reward, simulated training seconds)`` of one query, as the scripts ask."""
        reward, _latency, cost, _clock = self.api.simulate_train_eval(arch, self.name, hp=hp)
        return reward, cost

    def test_accuracy(self, arch: Cell) -> float:
        """The 200-epoch test accuracy, read as the scripts read their result."""
        info = self.api.get_more_info(
            self.api.query_index_by_arch(arch), self.name, hp="200", is_random=False
        )
        return info["test-accuracy"]


NATS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "ImageNet16-120"}
"""The NATS-Bench API's name of each dataset of :data:`nasjax.evaluation.tabular.DATASETS`."""


def _trial(split: str, seed: int, epochs: int, train_s: float | None, accuracies: dict):
    """One ``nats_bench`` trial record holding what the API reads of it: the last epoch's
    metrics (``accuracies`` per evaluation set; losses and training accuracy NaN) and, if
    ``train_s`` is given, every epoch's times (the API sums them: ``train_s`` spread
    evenly over the epochs, evaluation 0 s). Latency 1 s (read, never used here)."""
    from nats_bench.api_utils import ResultsCount

    last = epochs - 1
    trial = ResultsCount(
        split, None, {last: math.nan}, {last: math.nan}, 0.0, 0.0, {}, seed, epochs, [1.0]
    )
    if train_s is not None:
        trial.train_times = {e: train_s / epochs for e in range(epochs)}
    for set_name, accuracy in accuracies.items():
        trial.eval_names.append(set_name)
        trial.eval_acc1es[f"{set_name}@{last}"] = accuracy
        trial.eval_losses[f"{set_name}@{last}"] = math.nan
        if train_s is not None:
            trial.eval_times.update({f"{set_name}@{e}": 0.0 for e in range(epochs)})
    return trial


PEER_APIS = {"nats_bench": NatsBenchAPI, "lean": TableAPI}
"""The table APIs a peer search can ask: NATS-Bench's own class, or the lean one."""


class Tracker:
    """The protocol's bookkeeping, as the scripts keep it: the simulated clock, the number
    of counted queries and the best-reward architecture."""

    def __init__(self, api: TableAPI | NatsBenchAPI, budget_s: float) -> None:
        self.api, self.budget_s = api, budget_s
        self.clock, self.queries, self.best, self.best_reward = 0.0, 0, None, -math.inf

    def query(self, arch: Cell) -> float | None:
        """Trains ``arch`` (a table query): its reward, or ``None`` once the budget is spent
        (the query that does not fit is not counted, and the search ends)."""
        reward, cost = self.api.simulate_train_eval(arch)
        if self.clock + cost > self.budget_s:
            return None
        self.clock, self.queries = self.clock + cost, self.queries + 1
        if reward > self.best_reward:
            self.best, self.best_reward = arch, reward
        return reward

    def result(self) -> dict:
        """The search's outputs: the best-reward architecture's test accuracy and more."""
        return {
            "test_acc": self.api.test_accuracy(self.best) if self.best is not None else math.nan,
            "best_reward": self.best_reward,
            "num_queries": self.queries,
            "time_s": self.clock,
        }


def random_search(api: TableAPI | NatsBenchAPI, seed: int, budget_s: float) -> dict:
    """Uniform random cells until the budget is spent."""
    rng, tracker = random.Random(seed), Tracker(api, budget_s)
    while tracker.query(Cell.random(rng, api.ops)) is not None:
        pass
    return tracker.result()


class Model:
    """A member of REA's population."""

    def __init__(self, arch: Cell, accuracy: float) -> None:
        self.arch, self.accuracy = arch, accuracy


def regularized_evolution(
    api: TableAPI | NatsBenchAPI,
    seed: int,
    budget_s: float,
    population_size: int = 10,
    sample_size: int = 3,
) -> dict:
    """REA (Real et al., AAAI 2019) as the reference script: an aging deque population."""
    rng, tracker = random.Random(seed), Tracker(api, budget_s)
    population: collections.deque = collections.deque()
    while True:
        if tracker.queries < population_size:
            arch = Cell.random(rng, api.ops)
        else:
            sample = [rng.choice(population) for _ in range(sample_size)]
            parent = max(sample, key=lambda member: member.accuracy)
            arch = parent.arch.mutated(rng, api.ops)
        reward = tracker.query(arch)
        if reward is None:
            return tracker.result()
        population.append(Model(arch, reward))
        if len(population) > population_size:
            population.popleft()


def reinforce(
    api: TableAPI | NatsBenchAPI,
    seed: int,
    budget_s: float,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
) -> dict:
    """REINFORCE (Williams, 1992) with a PyTorch policy, one architecture per step."""
    import torch

    torch.manual_seed(seed)
    edges = NODES * (NODES + 1) // 2
    logits = torch.nn.Parameter(1e-3 * torch.randn(edges, len(api.ops)))
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    baseline_num = baseline_den = 0.0
    tracker = Tracker(api, budget_s)
    while True:
        policy = torch.distributions.Categorical(logits=logits)
        action = policy.sample()
        log_prob = policy.log_prob(action).sum()
        ops = [api.ops[i] for i in action.tolist()]
        nodes = [
            [(ops[n * (n - 1) // 2 + src], src) for src in range(n)] for n in range(1, NODES + 1)
        ]
        reward = tracker.query(Cell(nodes))
        if reward is None:
            return tracker.result()
        baseline_num = momentum * baseline_num + (1 - momentum) * reward
        baseline_den = momentum * baseline_den + (1 - momentum)
        loss = -log_prob * (reward - baseline_num / baseline_den)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


SEARCHES = {"random": random_search, "rea": regularized_evolution, "reinforce": reinforce}
"""The peer of each nasjax strategy of Table 5."""
