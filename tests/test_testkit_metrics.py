"""The shared readers the benchmarks, the soak and the tests use (playcast_testing.metrics)."""

from __future__ import annotations

import math

from playcast_testing.metrics import (
    by_label,
    metric_sum,
    nearest_rank,
    parse_metrics,
    percentile,
    slope_per_minute,
)

PAGE = """\
# HELP playcast_sessions_ended_total Sessions ended, by reason
# TYPE playcast_sessions_ended_total counter
playcast_sessions_ended_total{reason="client_left"} 3.0
playcast_sessions_ended_total{reason="client_failed"} 2.0
playcast_workers{status="available",game="a"} 4.0
playcast_workers{status="busy",game="a"} 1.0
playcast_workers{status="available",game="b"} 2.0
process_open_fds 17.0
"""


def test_parse_metrics_keeps_every_sample_by_its_text() -> None:
    samples = parse_metrics(PAGE)
    assert samples['playcast_sessions_ended_total{reason="client_left"}'] == 3.0
    assert samples["process_open_fds"] == 17.0
    assert len(samples) == 6


def test_metric_sum_matches_labels_exactly() -> None:
    samples = parse_metrics(PAGE)
    assert metric_sum(samples, "playcast_workers") == 7.0
    assert metric_sum(samples, "playcast_workers", status="available") == 6.0
    assert metric_sum(samples, "playcast_workers", status="available", game="b") == 2.0
    assert metric_sum(samples, "playcast_workers", status="avail") == 0.0
    assert metric_sum(samples, "playcast_worker") == 0.0


def test_by_label_splits_one_metric() -> None:
    samples = parse_metrics(PAGE)
    assert by_label(samples, "playcast_sessions_ended_total") == {
        "client_left": 3.0,
        "client_failed": 2.0,
    }
    assert by_label(samples, "playcast_workers", "game") == {"a": 5.0, "b": 2.0}
    assert by_label(samples, "process_open_fds") == {}


def test_percentiles() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 100) == 40.0
    assert math.isnan(percentile([], 50))
    assert nearest_rank(values, 50) == 20.0
    assert nearest_rank(values, 99) == 40.0
    assert nearest_rank([], 99) == 0.0


def test_slope_per_minute() -> None:
    assert slope_per_minute([(0.0, 10.0), (30.0, 11.0), (60.0, 12.0)]) == 2.0
    assert slope_per_minute([(5.0, 1.0)]) == 0.0
