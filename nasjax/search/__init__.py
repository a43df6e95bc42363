"""The loops that tie a space, a strategy and an evaluator together.

* :mod:`~nasjax.search.loop`: ask / evaluate / tell generations with real evaluation
  (population training, proxies), JSONL records, checkpoints and exact resume;
* :mod:`~nasjax.search.gradient`: epochs of a DARTS-family method over a relaxed space;
* :mod:`~nasjax.search.tabular`: a whole simulated search over the NAS-Bench-201 table
  inside one ``jit`` (Table 5's protocol).

Each loop keeps its run folder with :class:`nasjax.rundir.RunDir`.
"""

from nasjax.search.gradient import GradientSearchResult, gradient_search
from nasjax.search.loop import RESULTS_FILE, EvaluateFn, SearchResult, run_search
from nasjax.search.tabular import DEFAULT_BUDGET_S, query_table, run_seeds, simulate

__all__ = [
    "DEFAULT_BUDGET_S",
    "RESULTS_FILE",
    "EvaluateFn",
    "GradientSearchResult",
    "SearchResult",
    "gradient_search",
    "query_table",
    "run_seeds",
    "run_search",
    "simulate",
]
