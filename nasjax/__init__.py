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
from nasjax.objectives import count_macs, count_params, network_cost
from nasjax.search import SearchResult, run_search
from nasjax.spaces import SPACES, NB201Space, SearchSpace, make_space
from nasjax.strategies import (
    STRATEGIES,
    BestSoFar,
    Strategy,
    make_strategy,
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
    "NB201Space",
    "NasjaxError",
    "PopulationProgram",
    "SearchResult",
    "SearchSpace",
    "Strategy",
    "Task",
    "TrainConfig",
    "batch_indices",
    "compile_population",
    "count_macs",
    "count_params",
    "get_task",
    "load_dataset",
    "make_space",
    "make_strategy",
    "network_cost",
    "population_mesh",
    "random_search",
    "regularized_evolution",
    "run_search",
    "train_member",
    "train_population",
    "training_evaluator",
    "use_cpu_cores",
]
