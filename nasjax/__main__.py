"""``python -m nasjax``: see ``nasjax.cli``."""

from nasjax.cli import main

raise SystemExit(main())
