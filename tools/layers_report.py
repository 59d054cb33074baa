"""How deep and how wide the code is: the figures issue 23 set targets for.

- the deepest chain of runtime imports among a package's modules (imports
  under ``TYPE_CHECKING`` left out: they never run), and the chain itself;
- import cycles among them, with and without ``TYPE_CHECKING`` imports;
- the longest modules under ``src/``.

    .venv/bin/python tools/layers_report.py [playcast.signaling ...]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import grimp


def deepest_chain(graph: grimp.ImportGraph, package: str) -> list[str]:
    """The longest path of imports among ``package``'s modules (a cycle, if
    any, is cut where it closes)."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    inside = set(modules)

    @functools.cache
    def longest(module: str, seen: frozenset[str]) -> tuple[str, ...]:
        best: tuple[str, ...] = (module,)
        for dep in sorted(graph.find_modules_directly_imported_by(module) & inside):
            if dep in seen:
                continue
            path = (module, *longest(dep, seen | {dep}))
            if len(path) > len(best):
                best = path
        return best

    best: tuple[str, ...] = ()
    for module in modules:
        path = longest(module, frozenset({module}))
        if len(path) > len(best):
            best = path
    return list(best)


def cycles(graph: grimp.ImportGraph, package: str) -> list[tuple[str, str]]:
    """Pairs of modules of ``package`` that import each other, directly or not."""
    modules = sorted(m for m in graph.modules if m.startswith(package + "."))
    found = []
    for a in modules:
        for b in graph.find_modules_directly_imported_by(a):
            if b.startswith(package + ".") and graph.chain_exists(importer=b, imported=a):
                found.append((a, b))
    return found


def longest_files(root: Path, top: int) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p)) for p in root.rglob("*.py")]
    return sorted(sizes, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("packages", nargs="*", default=["playcast.signaling", "playcast.worker"])
    parser.add_argument("--src", default="src")
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    # No cache: a stale one (same mtimes after a checkout) reports old imports.
    runtime = grimp.build_graph("playcast", exclude_type_checking_imports=True, cache_dir=None)
    every = grimp.build_graph("playcast", cache_dir=None)
    for package in args.packages:
        chain = deepest_chain(runtime, package)
        print(f"{package}: deepest runtime import chain {len(chain) - 1} imports")
        print("   " + " -> ".join(m.removeprefix(package + ".") for m in chain))
        print(f"   cycles (runtime): {len(cycles(runtime, package))}")
        print(f"   cycles (with TYPE_CHECKING): {len(cycles(every, package))}")
    print("longest modules:")
    for n, path in longest_files(Path(args.src), 8):
        print(f"   {n:5d} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
