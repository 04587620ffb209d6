"""Print paretotune's import graph between its packages and top modules, from the code.

    python scripts/import_graph.py            # one line per edge: importer -> imported (count)
    python scripts/import_graph.py --modules  # and the module-level imports behind each edge

Built with grimp (import-linter's graph), so late imports inside functions count too. The rule
it should obey is the `[tool.importlinter]` contract in pyproject.toml (tests/test_layering.py).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import grimp


def unit(module: str) -> str:
    """``paretotune.search.study`` -> ``search``; ``paretotune.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "paretotune (__init__)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="list the module imports of each edge")
    args = parser.parse_args()
    graph = grimp.build_graph("paretotune", include_external_packages=False)
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = unit(importer), unit(imported)
            if a != b:
                edges[(a, b)].append(f"{importer} -> {imported}")
    for (a, b), imports in sorted(edges.items()):
        print(f"{a} -> {b} ({len(imports)})")
        if args.modules:
            for line in imports:
                print(f"    {line}")


if __name__ == "__main__":
    main()
