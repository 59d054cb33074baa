"""Issue 23's shape kept: figures that drift one merge at a time (a new rule
module importing another, a facade re-exporting a deep one) fail here, not in
a later review. The layering itself is import-linter's (``make lint``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_CHAIN = 7  # imports, the longest runtime chain among signaling's modules
MAX_LINES = 500


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layers_report", ROOT / "tools/layers_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["layers_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return _report()


@pytest.fixture(scope="module")
def runtime() -> grimp.ImportGraph:
    return grimp.build_graph("playcast", exclude_type_checking_imports=True, cache_dir=None)


def test_the_signaling_import_chain_stays_short(
    report: ModuleType, runtime: grimp.ImportGraph
) -> None:
    chain = report.deepest_chain(runtime, "playcast.signaling")
    assert len(chain) - 1 <= MAX_CHAIN, " -> ".join(chain)


def test_no_import_cycle_even_for_the_type_checker(report: ModuleType) -> None:
    every = grimp.build_graph("playcast", cache_dir=None)
    for package in ("playcast.signaling", "playcast.worker", "playcast.backends", "playcast.farm"):
        assert report.cycles(every, package) == [], package


def test_no_module_in_src_over_500_lines(report: ModuleType) -> None:
    longest = report.longest_files(ROOT / "src", 3)
    assert all(n <= MAX_LINES for n, _ in longest), longest
