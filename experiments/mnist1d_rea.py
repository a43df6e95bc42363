"""The main job: regularized evolution over NAS-Bench-201 cells on MNIST-1D.

Command (what ``make search`` runs)::

    python experiments/mnist1d_rea.py --out runs/mnist1d_rea      # or: make search

Expected runtime: about 1.5-2.5 minutes on an idle 2-core CPU (60 candidates of 200
training steps, then 1,000 steps for the winner; 87-135 s measured, several times that on
a loaded machine). Expected result: test accuracy of the found cell about 98.5-99 %
(seeds 0 / 1 / 2: 98.50 / 98.50 / 99.00 %; MNIST-1D paper, Greydanus 2020: logistic 32 %,
MLP 68 %, CNN 94 %, GRU 91 %, human 96 %). ``--smoke`` runs a tiny version in about a
minute for tests; any flag of ``python -m nasjax search`` can be added and overrides the
defaults below.
"""

import sys

from nasjax.devices import use_cpu_cores

use_cpu_cores()  # before JAX starts: one host device per core

from nasjax.cli import main  # noqa: E402

DEFAULTS = ["search", "--space", "nb201", "--strategy", "rea", "--dataset", "mnist1d"]

if __name__ == "__main__":
    raise SystemExit(main(DEFAULTS + sys.argv[1:]))
