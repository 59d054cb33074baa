"""The one-minute cluster soak (bench/soak.py --ci --cluster 2) as tests: two
real nodes on a real redis-server behind one balancer URL, real workers, the
soak's churn (every way a session ends) and a node SIGKILLed and restarted
under its own id every 20 s. The soak measures; the limits are here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_soak_ci import MB, soak

# The soak runs once (about 75 s) inside the first test's timeout.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def result() -> Any:
    return asyncio.run(soak.run_soak(soak.parse_args(["--ci", "--cluster", "2"])))


def test_nodes_were_killed_and_came_back(result: Any) -> None:
    c = result.cluster
    assert c is not None and c.nodes == 2
    assert c.node_kills >= 2, "a node SIGKILLed every 20 s of a one-minute soak"
    assert len(c.restart_seconds) == c.node_kills, "every killed node listened again"
    # Its first life waited out (key expiry + TTL + half a TTL), then Python's start.
    assert all(s < 15 for s in c.restart_seconds), c.restart_seconds
    assert c.balancer["skipped"] > 0, "the balancer passed over a node that was down"


def test_sessions_end_by_every_cause(result: Any) -> None:
    assert result.sessions_started > 0
    causes = {cause for cause, n in result.ended_by_cause.items() if n > 0} - {"node_killed"}
    assert len(causes) >= 5, result.ended_by_cause
    assert result.inactivity_timeouts == result.inactivity_warnings, "a timeout without warning"


def test_no_invariant_broken(result: Any) -> None:
    assert result.violations == [], "confirmed by a second read"
    assert result.end_state == []


def test_nothing_left_behind_in_redis(result: Any) -> None:
    c = result.cluster
    assert c.at_rest_problems == []
    assert set(c.census) == {"start", "warm", "end"}
    start, end = c.census["start"], c.census["end"]
    assert start["pc:w"] == end["pc:w"] == result.cfg.workers
    assert sum(end.values()) <= sum(start.values()) + 2, (start, end)  # + streams, node sets
    # The arrival counter, and nothing else but a status answer that came after
    # its asker stopped waiting (it expires within seconds, see below).
    assert {k: n for k, n in c.leftover.items() if k != "pc:reply"} == {"pc:seq": 1}, c.leftover
    assert c.leftover_without_ttl == []


def test_every_end_is_accounted_for(result: Any) -> None:
    assert result.errors == []
    assert result.unexpected == [], "every end but a node's death is its scenario's"
    # Sessions ended by a node's death are each listed with what the player saw.
    assert result.ended_by_cause.get("node_killed", 0) <= len(result.cluster.node_losses)
    assert len(result.cluster.node_losses) <= 6 * result.cluster.node_kills, "a few a kill"


def test_the_living_node_does_not_grow(result: Any) -> None:
    (n1,) = [p for p in result.processes.values() if p.measured and p.name == "node n1"]
    assert n1.pids == 1
    warm, end = n1.quiet["warm"], n1.quiet["end"]
    assert end.rss - warm.rss <= result.rss_allowance(warm.rss), (warm, end)
    assert end.fds - warm.fds <= result.cfg.fd_slack_quiet, (warm.fds, end.fds)
    assert n1.trend is not None
    assert n1.trend["rss_last_mb"] * MB - n1.trend["rss_first_mb"] * MB <= result.rss_allowance(
        n1.trend["rss_first_mb"] * MB
    )


def test_clean_exits_and_logs(result: Any) -> None:
    assert result.unexpected_exits == []
    assert result.exit_codes["nodes"] == [0, 0]
    assert result.exit_codes["workers"] and all(c == 0 for c in result.exit_codes["workers"])
    assert result.log_errors == {"server": [], "workers": []}
    assert soak.problems(result) == [], "the soak's own verdict agrees"
