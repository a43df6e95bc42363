"""nasjax: neural architecture search in JAX, where an architecture is data.

A genotype is a fixed-shape ``int32`` array; a population is an ``int32[P, D]`` array that
one compiled call trains or scores. Fitness is always MAXIMISED (accuracy-like).
"""

from nasjax.data import DATASETS, Dataset, batch_indices, load_dataset
from nasjax.devices import use_cpu_cores
from nasjax.errors import NasjaxError
from nasjax.evaluation.compression import compression_evaluator
from nasjax.evaluation.lm_training import LMTrainConfig, train_lm_population
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
from nasjax.nets.prune import l1_importance, top_k_mask
from nasjax.nets.quantize import quantize_activation, quantize_weight
from nasjax.objectives import (
    count_flops,
    count_macs,
    count_params,
    expected_cost,
    measure_latency_ms,
    network_cost,
    peak_memory_mb,
)
from nasjax.pareto import crowding_distance, hypervolume_2d, non_dominated_rank, pareto_mask
from nasjax.relaxation.bit_search import dnas_bit_search
from nasjax.search import SearchResult, run_search
from nasjax.spaces import SPACES, NB201Space, SearchSpace, make_space
from nasjax.spaces.compress import CompressedSpace
from nasjax.spaces.nb201_costs import nb201_cost_table, nb201_edge_costs
from nasjax.spaces.nb201_latency import LatencyTable, build_latency_table, evaluate_latency_table
from nasjax.spaces.saved import SavedResult, load_result
from nasjax.spaces.transformer import ElasticSupernet, TransformerSpace
from nasjax.strategies import (
    STRATEGIES,
    BestSoFar,
    Strategy,
    bananas,
    constrained_fitness,
    local_search,
    make_strategy,
    nsga2,
    random_search,
    regularized_evolution,
)
from nasjax.tasks import TASKS, Task, get_task
from nasjax.text import TextData, load_text
from nasjax.tracking import Callback, TensorBoardWriter
from nasjax.transformer_costs import flops_per_token, param_counts


def _version() -> str:
    """The installed distribution's version (written once, in ``pyproject.toml``); a source
    checkout that was never installed reads it from the ``pyproject.toml`` beside it."""
    from importlib import metadata

    try:
        return metadata.version("nasjax")
    except metadata.PackageNotFoundError:
        pass
    import re
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    found = pyproject.is_file() and re.search(
        r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE
    )
    return found.group(1) if found else "0+unknown"


__version__ = _version()

__all__ = [
    "DATASETS",
    "SPACES",
    "STRATEGIES",
    "TASKS",
    "BestSoFar",
    "Callback",
    "CompressedSpace",
    "Dataset",
    "ElasticSupernet",
    "Evaluator",
    "LatencyTable",
    "LMTrainConfig",
    "NasjaxError",
    "NB201Space",
    "PopulationProgram",
    "SavedResult",
    "SearchResult",
    "SearchSpace",
    "Strategy",
    "Task",
    "TensorBoardWriter",
    "TextData",
    "TrainConfig",
    "TransformerSpace",
    "batch_indices",
    "build_latency_table",
    "compile_population",
    "compression_evaluator",
    "constrained_fitness",
    "count_flops",
    "count_macs",
    "count_params",
    "crowding_distance",
    "dnas_bit_search",
    "evaluate_latency_table",
    "expected_cost",
    "flops_per_token",
    "get_task",
    "hypervolume_2d",
    "l1_importance",
    "load_dataset",
    "load_result",
    "load_text",
    "make_space",
    "make_strategy",
    "measure_latency_ms",
    "nb201_cost_table",
    "nb201_edge_costs",
    "network_cost",
    "non_dominated_rank",
    "nsga2",
    "param_counts",
    "pareto_mask",
    "peak_memory_mb",
    "population_mesh",
    "quantize_activation",
    "quantize_weight",
    "random_search",
    "regularized_evolution",
    "bananas",
    "local_search",
    "run_search",
    "top_k_mask",
    "train_member",
    "train_lm_population",
    "train_population",
    "training_evaluator",
    "use_cpu_cores",
]
