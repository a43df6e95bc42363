"""``python -m nasjax``: see ``nasjax.cli``."""

from nasjax.devices import use_cpu_cores

use_cpu_cores()  # before JAX starts: one host device per core

from nasjax.cli import main  # noqa: E402

raise SystemExit(main())
