"""Fails when a module imports another module's private name (``from nasjax.x import _y``).

The companion of the import-linter layers contract (``make lint`` runs both): a name with a
leading underscore is its module's own; what another module needs is made public, or moved
to where both can import it.

Usage: ``python tools/check_private_imports.py DIR...``; exit 1 and one line per offence.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def private_imports(path: Path) -> list[str]:
    """``path:line: from MODULE import _NAME`` for every private name imported from nasjax."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nasjax"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def main(folders: list[str]) -> int:
    offences = [
        line
        for folder in folders
        for path in sorted(Path(folder).rglob("*.py"))
        for line in private_imports(path)
    ]
    for line in offences:
        print(f"{line} (a private name imported across modules)")
    return 1 if offences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["nasjax", "experiments"]))
