"""nasjax: neural architecture search in JAX, where an architecture is data.

A genotype is a fixed-shape ``int32`` array; a population is an ``int32[P, D]`` array that
one compiled call trains or scores. Fitness is always MAXIMISED (accuracy-like).
"""

from nasjax.data import DATASETS, Dataset, batch_indices, load_dataset
from nasjax.devices import use_cpu_cores
from nasjax.errors import NasjaxError
from nasjax.evaluation.training import (
    Evaluator,
    PopulationProgram,
    TrainConfig,
    compile_population,
    population_mesh,
    train_member,
    train_population,
    training_evaluator,
)
from nasjax.latency import LatencyTable, build_latency_table, evaluate_latency_table
from nasjax.objectives import (
    count_flops,
    count_macs,
    count_params,
    expected_cost,
    measure_latency_ms,
    nb201_cost_table,
    nb201_edge_costs,
    network_cost,
    peak_memory_mb,
)
from nasjax.pareto import crowding_distance, hypervolume_2d, non_dominated_rank, pareto_mask
from nasjax.search import SearchResult, run_search
from nasjax.spaces import SPACES, NB201Space, SearchSpace, make_space
from nasjax.strategies import (
    STRATEGIES,
    BestSoFar,
    Strategy,
    constrained_fitness,
    make_strategy,
    nsga2,
    random_search,
    regularized_evolution,
)
from nasjax.tasks import TASKS, Task, get_task

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "SPACES",
    "STRATEGIES",
    "TASKS",
    "BestSoFar",
    "Dataset",
    "Evaluator",
    "LatencyTable",
    "NasjaxError",
    "NB201Space",
    "PopulationProgram",
    "SearchResult",
    "SearchSpace",
    "Strategy",
    "Task",
    "TrainConfig",
    "batch_indices",
    "build_latency_table",
    "compile_population",
    "constrained_fitness",
    "count_flops",
    "count_macs",
    "count_params",
    "crowding_distance",
    "evaluate_latency_table",
    "expected_cost",
    "get_task",
    "hypervolume_2d",
    "load_dataset",
    "make_space",
    "make_strategy",
    "measure_latency_ms",
    "nb201_cost_table",
    "nb201_edge_costs",
    "network_cost",
    "non_dominated_rank",
    "nsga2",
    "pareto_mask",
    "peak_memory_mb",
    "population_mesh",
    "random_search",
    "regularized_evolution",
    "run_search",
    "train_member",
    "train_population",
    "training_evaluator",
    "use_cpu_cores",
]
