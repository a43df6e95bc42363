"""``python -m nasjax`` and the ``nasjax`` console script: see ``nasjax.cli``.

Both start in :func:`main`, so both split the host into one device per core (unless
``XLA_FLAGS`` sets a count) before JAX starts its backends; ``nasjax.cli`` is imported only
after that.
"""

from nasjax.devices import use_cpu_cores


def main() -> int:
    """Asks for one host device per core, then runs ``nasjax.cli.main``; the exit status."""
    use_cpu_cores()  # before JAX starts: one host device per core
    from nasjax.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
