"""tests/conftest.py's handling of a worker's native crash: the test is run once more,
the crash's stack is printed last, and a test that crashes every time still fails."""

import os
import subprocess
import sys
from pathlib import Path

CRASHING_TESTS = """
import ctypes
from pathlib import Path


def test_crashes_once():
    marker = Path(__file__).parent / "crashed_once"
    if not marker.exists():
        marker.touch()
        ctypes.string_at(0)  # a segfault, as inside a native library


def test_crashes_every_time():
    ctypes.string_at(0)


def test_passes():
    pass
"""


def test_a_crashed_worker_reruns_its_test_once_and_prints_the_stack(tmp_path):
    (tmp_path / "test_crashing.py").write_text(CRASHING_TESTS)
    tests_folder = Path(__file__).parent
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    path = os.pathsep.join(filter(None, [str(tests_folder), env.get("PYTHONPATH")]))
    env |= {"PYTHONPATH": path, "NASJAX_TEST_CACHE": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "conftest", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), "test_crashing.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "1 failed, 2 passed, 2 rerun" in out, out
    assert "FAILED test_crashing.py::test_crashes_every_time" in out, out
    summary = out[out.index("worker crashed in test_crashing.py::test_crashes_once") :]
    assert "Fatal Python error: Segmentation fault" in summary, out
    assert 'test_crashing.py", line 10 in test_crashes_once' in summary, out
    assert "/_pytest/" not in summary.split("short test summary")[0], out
