"""The one-minute soak (bench/soak.py --ci) as tests: real server, real workers,
sessions ended by every cause. The soak measures; the limits are here, one
concern a test, each asserted on the result object the soak returns."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
MB = 1024 * 1024

# The soak runs once (about 70 s) inside the first test's timeout.
pytestmark = pytest.mark.timeout(300)


def _load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", BENCH / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.fixture(scope="module")
def result() -> Any:
    return asyncio.run(soak.run_soak(soak.parse_args(["--ci"])))


def test_sessions_end_by_every_cause(result: Any) -> None:
    assert result.sessions_started > 0
    causes = {cause for cause, n in result.ended_by_cause.items() if n > 0}
    assert len(causes) >= 5, result.ended_by_cause
    assert result.inactivity_timeouts == result.inactivity_warnings, "a timeout without warning"


def test_memory_and_descriptors_do_not_grow(result: Any) -> None:
    cfg = result.cfg
    measured = [p for p in result.processes.values() if p.measured]
    assert len(measured) == cfg.workers, "the server and every worker but the killed one"
    for p in measured:
        assert p.pids == 1, f"{p.name} ran as {p.pids} processes"
        tr = p.trend
        assert tr is not None, f"{p.name}: too few samples after warm-up"
        first, last = tr["rss_first_mb"] * MB, tr["rss_last_mb"] * MB
        assert last - first <= result.rss_allowance(first), (p.name, "RSS under load", tr)
        assert tr["fds_last"] - tr["fds_first"] <= cfg.fd_slack_trend, (p.name, "fds", tr)
        warm, end = p.quiet["warm"], p.quiet["end"]
        assert end.rss - warm.rss <= result.rss_allowance(warm.rss), (p.name, "RSS", warm, end)
        assert end.fds - warm.fds <= cfg.fd_slack_quiet, (p.name, "fds at rest", warm, end)


def test_no_invariant_broken(result: Any) -> None:
    assert result.violations == []
    assert result.end_state == []


def test_every_end_is_accounted_for(result: Any) -> None:
    assert result.errors == []
    assert result.unexpected == []
    counted = result.accounting
    assert counted.server_started == counted.soak_started == result.sessions_started
    assert counted.server_ended == counted.soak_ended
    assert counted.server_rejections == counted.soak_rejections
    timeouts = counted.server_heartbeat_timeouts
    assert timeouts.get("client", 0) == counted.soak_client_heartbeat_timeouts
    assert timeouts.get("worker", 0) == 0


def test_clean_exits_and_logs(result: Any) -> None:
    assert result.unexpected_exits == []
    assert result.exit_codes["server"] == 0
    assert result.exit_codes["workers"] and all(c == 0 for c in result.exit_codes["workers"])
    assert result.log_errors == {"server": [], "workers": []}
    assert soak.problems(result) == [], "the soak's own verdict agrees"
