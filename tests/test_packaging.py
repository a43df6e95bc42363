"""The wheel: built from the sources, installed into a fresh venv, used from outside the repo.

Offline: the wheel is built with the build tools already installed and installed with
``--no-index --no-deps``; the fresh venv sees this project's ``.venv`` packages (jax and
the rest) through a ``.pth`` line, which adds that folder to ``sys.path`` without running
its ``.pth`` files, so the editable install of this checkout stays out of it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import nasjax

ROOT = Path(__file__).resolve().parents[1]
BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"  # NB201 index 6111
DEVICE_COUNT = "--xla_force_host_platform_device_count"

# Run inside the fresh venv: where nasjax and its table come from, and every third-party
# module `import nasjax` loads, checked against the wheel's declared (non-extra)
# dependencies and theirs, so a missing entry in pyproject.toml fails here.
PROBE = r"""
import json, re, sys
from importlib import metadata
import nasjax, nasjax.cli
from nasjax.evaluation import tabular

def name(req):
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", req).group()).lower()

closure, todo = set(), ["nasjax"]
while todo:
    dist = todo.pop()
    if dist in closure:
        continue
    closure.add(dist)
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        continue
    todo += [name(r) for r in reqs if not re.search(r"\bextra\s*==", r)]
owners = metadata.packages_distributions()
loaded = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
undeclared = sorted(
    f"{m} ({', '.join(owners[m])})" for m in loaded
    if m in owners and not {name(d) for d in owners[m]} & closure
)
columns = tabular.load_nb201_columns(["c10_test_200ep"])
print(json.dumps({
    "package": nasjax.__file__, "version": nasjax.__version__,
    "table": str(tabular.DEFAULT_PATH), "resolved": str(tabular.resolve_path()),
    "readme": (tabular.DEFAULT_PATH.parent / "README.md").is_file(),
    "best_c10": float(columns["c10_test_200ep"].max()), "undeclared": undeclared,
}))
"""


def _source_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel of this checkout (dependencies via a .pth)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # a copy, so the build's build/ and egg-info stay out of the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nasjax", src / "nasjax", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*build, "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("nasjax-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-index", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, cwd=tmp)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "nasjax_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


def run(venv: Path, *argv: str, devices: int | None = None) -> str:
    """``argv`` run from outside the repo with the venv's programs; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NASJAX_NB201")}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT)]
    if devices is not None:
        flags.append(f"{DEVICE_COUNT}={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["NASJAX_COMPILATION_CACHE"] = "off"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        argv, cwd=venv.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(venv):
    probe = json.loads(run(venv, str(venv / "bin" / "python"), "-c", PROBE))
    assert Path(probe["package"]).is_relative_to(venv)  # the wheel, not this checkout
    assert probe["version"] == _source_version() == nasjax.__version__
    assert Path(probe["table"]).is_relative_to(venv) and probe["resolved"] == probe["table"]
    assert probe["readme"] and round(probe["best_c10"], 2) == 94.37
    assert probe["undeclared"] == [], "imported by `import nasjax`, not in pyproject.toml"

    record = json.loads(
        run(venv, "nasjax", "info", "--space", "nb201", "--arch", BEST_C10, "--dataset", "cifar10")
    )
    assert record["params"] == 1_073_466


@pytest.mark.slow
def test_console_script_starts_like_python_dash_m(venv):
    """On a CPU one host device per core for both, unless XLA_FLAGS sets a count."""
    script = run(venv, "nasjax", "--version")
    module = run(venv, str(venv / "bin" / "python"), "-m", "nasjax", "--version")
    assert script == module
    match = re.fullmatch(r"nasjax (\S+) \(jax \S+, (\d+) (\w+) devices?\)\n", script)
    assert match and match[1] == _source_version()
    if match[3] == "cpu":
        cores = max(1, len(os.sched_getaffinity(0)))
        assert int(match[2]) == cores
        assert f", {cores + 1} cpu devices)" in run(venv, "nasjax", "--version", devices=cores + 1)
