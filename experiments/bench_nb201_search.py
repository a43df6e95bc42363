"""Benchmark: NAS-Bench-201 Table 5 searches, nasjax against the paper's own way of running
them, compile included, and the whole Table 5 cold and with a warm compilation cache.

Protocol (Dong & Yang, NAS-Bench-201, ICLR 2020, Table 5; see
``nasjax/evaluation/data/nb201/README.md``): reward = 12-epoch validation accuracy, each query
charged ``c10valid_train_time_s_200ep * 12 / 200`` simulated seconds, budget 12,000 s (a
query counts only if ``clock + cost <= budget``), result = 200-epoch test accuracy of the
best-reward architecture; CIFAR-10. For each strategy ``s`` of ``rea``, ``random``,
``reinforce`` (settings of ``nb201_table5.py``; REA with the reference's node-then-edge
mutation) one invocation measures:

(a) the peer (:mod:`nb201_peer`): the scripts' way, architecture objects and one Python
    query per step (REINFORCE: a PyTorch policy on one thread), for ``--peer-seeds``
    searches, asking NAS-Bench-201's own API class (``nats_bench.NATStopology``, filled
    from the table) -> ``peer_ms_per_seed[s]``, and again asking the lean table API of
    :mod:`nb201_peer` (a dictionary look-up per query) -> ``lean_peer_ms_per_seed[s]``;
    both give the same searches (``peer_apis_agree[s]``);
(b) ours compiled: :func:`~nasjax.search.tabular.run_seeds` (one compiled program) for
    ``--seeds`` searches, the median of ``TIMED_CALLS`` calls with fresh keys ->
    ``ours_compiled_ms_per_seed[s]``, ``speedup_compiled[s]`` (``_vs_lean``: against the
    lean peer); the same at each count of
    ``--first-call-seeds`` -> ``speedup_compiled_by_seeds[s]`` (a call's fixed cost, the
    kernel launches of each step, is shared by more searches as the count grows);
(c) ours first call, compile included, at 100, 500 and 5,000 seeds (``--first-call-seeds``):
    each after ``jax.clear_caches()``, the persistent compilation cache off, in a
    process where JAX has already started (its one-time start-up is not counted) ->
    ``ours_first_call_ms_per_seed[s]`` (at ``--seeds``), ``speedup_incl_compile[s]``,
    ``speedup_incl_compile_by_seeds[s]`` and ``speedup_incl_compile_vs_lean[s]``;
(d) agreement: mean final test accuracy of (b) vs (a), agreeing if
    ``|diff| < 4 * sqrt(se_ours^2 + se_peer^2)`` (Welch t, mean query counts);
(e) ``table_wall_s``: ``nb201_table5.py --dataset all --seeds SEEDS`` (4 methods x 3
    datasets, one program per method) in a new process with an empty compilation cache,
    and ``table_wall_s_warm``: the same command again in another process, the cache now
    warm. Both are the searches' wall time as the script reports it; ``*_process_s`` adds
    Python and JAX start-up, the plot and the files.

Command::

    python experiments/bench_nb201_search.py --seeds 500 --out runs/bench_nb201.json

Expected runtime: about 40 s on a 2-core CPU (the peers ~20 s, filling NATS-Bench's API
~1 s and 0.5 GB, nine first calls ~8 s, two Table 5 processes ~8 s); ``--smoke`` (for
tests) takes ~25 s. The figures measured here are in the README. Writes the JSON to
``--out`` atomically and prints them. Exit 2 with one error line on bad input; exit 1 if
(d) disagrees for a strategy or the two peer APIs' searches differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nasjax.devices import CACHE_ENV, use_cpu_cores, without_compilation_cache

use_cpu_cores()  # before JAX starts: XLA -O1 (Table 5 cold 6.6 s -> 5.1 s here)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nasjax.evaluation.tabular import load_nb201  # noqa: E402
from nasjax.flags import OneLineErrorParser, check_memory, list_of, positive_int, run_script, seed  # noqa: E402
from nasjax.rundir import check_out_file, write_json_atomic  # noqa: E402
from nasjax.search.tabular import DEFAULT_BUDGET_S, run_seeds, seed_bytes  # noqa: E402
from nasjax.spaces.nb201 import NB201Space  # noqa: E402
from nasjax.strategies import make_strategy  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nb201_peer  # noqa: E402  (sibling script)
from nb201_table5 import METHODS  # noqa: E402  (sibling script, reused)

STRATEGIES = ("rea", "random", "reinforce")
TIMED_CALLS = 5
DATASET = "cifar10"
AGREE_SIGMAS = 4.0
SMOKE = {"seeds": 16, "peer_seeds": 4, "first_call_seeds": [16]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=positive_int, default=500, help="searches of ours")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--nb201", default=None, help="path of nb201.csv.gz (else $NASJAX_NB201)")
    p.add_argument("--peer-seeds", type=positive_int, default=100, help="searches of the peer")
    p.add_argument(
        "--first-call-seeds",
        type=list_of(positive_int),
        default=[100, 500, 5000],
        help="seed counts of the first-call (compile included) timings",
    )
    p.add_argument("--seed", type=seed, default=0, help="base seed")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes for tests: {SMOKE}")
    return p.parse_sized(argv, SMOKE)


def agreement(ours: np.ndarray, peer: np.ndarray) -> dict:
    """Means, standard errors, Welch t and whether ``|diff| < 4 * sqrt(se1^2 + se2^2)``."""
    (m1, s1, se1), (m2, s2, se2) = _mean_std_se(ours), _mean_std_se(peer)
    se = math.sqrt(se1**2 + se2**2)
    diff = m1 - m2
    return {
        "ours_mean": m1,
        "ours_std": s1,
        "ours_se": se1,
        "peer_mean": m2,
        "peer_std": s2,
        "peer_se": se2,
        "diff": diff,
        "tolerance": AGREE_SIGMAS * se,
        "welch_t": diff / se if se > 0 else (0.0 if diff == 0 else math.inf),
        "agree": bool(abs(diff) <= AGREE_SIGMAS * se),
    }


def _mean_std_se(x: np.ndarray) -> tuple[float, float, float]:
    x = np.asarray(x, np.float64)
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return float(np.mean(x)), std, std / math.sqrt(x.size)


def _blocked(out: dict) -> dict:
    return {k: np.asarray(v) for k, v in out.items()}


def time_ours(strategy, table, args: argparse.Namespace, offset: int) -> dict:
    """(b) and (c) for one strategy, at every seed count: the first call (compile included,
    in-memory caches cleared; the script keeps the persistent cache off), then the median
    of ``TIMED_CALLS`` compiled calls with fresh keys."""
    first_calls, compiled, out = {}, {}, None
    for count in sorted({*args.first_call_seeds, args.seeds}):
        jax.clear_caches()
        t0 = time.perf_counter()
        key = jax.random.key(args.seed + offset)
        _blocked(run_seeds(strategy, table, DATASET, key, num_seeds=count))
        first_calls[count] = time.perf_counter() - t0
        timings = []
        for repeat in range(TIMED_CALLS):
            key = jax.random.key(args.seed + offset + 1 + repeat)
            t0 = time.perf_counter()
            done = _blocked(run_seeds(strategy, table, DATASET, key, num_seeds=count))
            timings.append(time.perf_counter() - t0)
            if count == args.seeds and out is None:
                out = done
        compiled[count] = float(np.median(timings))
    return {"first_calls_s": first_calls, "compiled_s": compiled, "out": out}


def time_peer(name: str, api, args: argparse.Namespace) -> tuple[float, list[dict]]:
    """(a) for one strategy and one table API: seconds per search and the searches'
    results."""
    import torch

    torch.set_num_threads(1)  # as the measurement of the reference scripts
    search = nb201_peer.SEARCHES[name]
    t0 = time.perf_counter()
    runs = [search(api, args.seed + s, DEFAULT_BUDGET_S) for s in range(args.peer_seeds)]
    return (time.perf_counter() - t0) / args.peer_seeds, runs


def time_table(args: argparse.Namespace) -> dict:
    """(e): ``nb201_table5.py --dataset all`` in a new process, cold then warm."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="nasjax_bench_") as tmp:
        env = {**os.environ, CACHE_ENV: str(Path(tmp) / "cache")}
        for run_name in ("cold", "warm"):
            out = Path(tmp) / run_name
            command = [sys.executable, str(HERE / "nb201_table5.py"), "--dataset", "all"]
            command += ["--seeds", str(args.seeds), "--seed", str(args.seed), "--out", str(out)]
            if args.nb201:
                command += ["--nb201", args.nb201]
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            process_s = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(
                    f"nb201_table5.py failed ({done.returncode}): {done.stderr[-2000:]}"
                )
            table5 = json.loads((out / "results.json").read_text())
            suffix = "" if run_name == "cold" else "_warm"
            result[f"table_wall_s{suffix}"] = table5["protocol"]["wall_s"]
            result[f"table_process_s{suffix}"] = round(process_s, 3)
            if run_name == "cold":
                result["table_cells"] = {
                    f"{d}/{m}": {k: table5[d][m][k] for k in ("mean", "std", "mean_queries")}
                    for d in table5
                    if d != "protocol"
                    for m in METHODS
                }
    return result


def run(args: argparse.Namespace) -> dict:
    check_out_file(args.out)
    table = load_nb201(args.nb201)
    largest = max(args.seeds, *args.first_call_seeds)
    check_memory("--seeds", largest, seed_bytes(DEFAULT_BUDGET_S, table.min_cost))
    space = NB201Space()
    jax.jit(lambda x: x + 1)(np.ones(2)).block_until_ready()  # JAX's start-up, not counted
    result: dict = {key: {} for key in KEYS_PER_STRATEGY}
    result["agreement"] = {}
    # Built once, as the scripts load the API once; not timed.
    apis = {kind: api(table, DATASET) for kind, api in nb201_peer.PEER_APIS.items()}
    for offset, name in enumerate(STRATEGIES):
        strategy_name, settings = METHODS[name]
        strategy = make_strategy(strategy_name, space, **settings)
        ours = time_ours(strategy, table, args, 100 * offset)
        peer_s, peer_runs = time_peer(name, apis["nats_bench"], args)
        lean_s, lean_runs = time_peer(name, apis["lean"], args)
        compiled_by = {n: s / n for n, s in ours["compiled_s"].items()}
        compiled = compiled_by[args.seeds]
        first = {n: s / n for n, s in ours["first_calls_s"].items()}
        result["peer_ms_per_seed"][name] = peer_s * 1e3
        result["ours_compiled_ms_per_seed"][name] = compiled * 1e3
        result["ours_first_call_ms_per_seed"][name] = first[args.seeds] * 1e3
        result["ours_first_call_s_by_seeds"][name] = ours["first_calls_s"]
        result["speedup_compiled"][name] = peer_s / compiled
        result["speedup_compiled_by_seeds"][name] = {n: peer_s / s for n, s in compiled_by.items()}
        result["speedup_incl_compile"][name] = peer_s / first[args.seeds]
        result["speedup_incl_compile_by_seeds"][name] = {n: peer_s / s for n, s in first.items()}
        result["lean_peer_ms_per_seed"][name] = lean_s * 1e3
        result["speedup_compiled_vs_lean"][name] = lean_s / compiled
        result["speedup_incl_compile_vs_lean"][name] = lean_s / first[args.seeds]
        result["peer_apis_agree"][name] = peer_runs == lean_runs
        stats = agreement(ours["out"]["test_acc"], np.array([r["test_acc"] for r in peer_runs]))
        stats["ours_mean_queries"] = float(np.mean(ours["out"]["num_queries"]))
        stats["peer_mean_queries"] = float(np.mean([r["num_queries"] for r in peer_runs]))
        result["agreement"][name] = stats
    result.update(time_table(args))
    result.update(
        seeds=args.seeds,
        peer_seeds=args.peer_seeds,
        first_call_seeds=args.first_call_seeds,
        dataset=DATASET,
        budget_s=DEFAULT_BUDGET_S,
        settings={name: METHODS[name] for name in STRATEGIES},
        targets={
            "speedup_incl_compile (500 seeds)": ">= 10",
            "speedup_compiled": ">= 100",
            "table_wall_s": "<= 10",
            "table_wall_s_warm": "<= 3",
        },
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
    )
    return result


KEYS_PER_STRATEGY = (
    "peer_ms_per_seed",
    "ours_compiled_ms_per_seed",
    "ours_first_call_ms_per_seed",
    "ours_first_call_s_by_seeds",
    "speedup_compiled",
    "speedup_compiled_by_seeds",
    "speedup_incl_compile",
    "speedup_incl_compile_by_seeds",
    "lean_peer_ms_per_seed",
    "speedup_compiled_vs_lean",
    "speedup_incl_compile_vs_lean",
    "peer_apis_agree",
)


def report(args: argparse.Namespace, result: dict) -> int:
    """Writes ``--out``, prints the figures; 1 if ours and the peer disagree, else 0."""
    write_json_atomic(args.out, result)
    print(
        f"| strategy | peer ms/seed (NATS-Bench API; lean) | ours compiled ms/seed | x (lean) | "
        f"first call ms/seed ({args.seeds} seeds) | x incl. compile (lean) | agreement "
        f"(ours vs peer) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in STRATEGIES:
        a = result["agreement"][name]
        by_seeds = ", ".join(
            f"{n}: {x:.1f}x" for n, x in result["speedup_incl_compile_by_seeds"][name].items()
        )
        compiled_by = ", ".join(
            f"{n}: {x:.0f}x" for n, x in result["speedup_compiled_by_seeds"][name].items()
        )
        print(
            f"| {name} | {result['peer_ms_per_seed'][name]:.3f}; "
            f"{result['lean_peer_ms_per_seed'][name]:.3f} | "
            f"{result['ours_compiled_ms_per_seed'][name]:.4f} | "
            f"{result['speedup_compiled'][name]:.0f}x ({compiled_by}) "
            f"({result['speedup_compiled_vs_lean'][name]:.0f}x) | "
            f"{result['ours_first_call_ms_per_seed'][name]:.3f} | "
            f"{result['speedup_incl_compile'][name]:.1f}x ({by_seeds}) "
            f"({result['speedup_incl_compile_vs_lean'][name]:.1f}x) | "
            f"{a['ours_mean']:.2f} ± {a['ours_se']:.2f} vs {a['peer_mean']:.2f} ± "
            f"{a['peer_se']:.2f} (se), t {a['welch_t']:+.2f}: "
            f"{'agree' if a['agree'] else 'DISAGREE'} |"
        )
    if not all(result["peer_apis_agree"].values()):
        print(f"the two peer APIs gave different searches: {result['peer_apis_agree']}")
    print(
        f"Table 5 ({len(METHODS)} methods x 3 datasets x {args.seeds} seeds): "
        f"{result['table_wall_s']:.2f} s cold, {result['table_wall_s_warm']:.2f} s with a warm "
        f"compilation cache (processes: {result['table_process_s']:.1f} s, "
        f"{result['table_process_s_warm']:.1f} s); wrote {args.out}"
    )
    agree = all(result["agreement"][n]["agree"] for n in STRATEGIES)
    return 0 if agree and all(result["peer_apis_agree"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input, 1 if ours and the peer
    disagree, 130 on Ctrl-C, else 0)."""
    status: list[int] = []
    code = run_script(parse_args, lambda args: status.append(report(args, run(args))), argv)
    return code or status[0]


if __name__ == "__main__":
    without_compilation_cache()  # every first call compiles; Table 5's processes have theirs
    raise SystemExit(main())
