"""Reading a running signaling server from outside, and the figures benchmarks report.

Shared by the benchmarks (bench/), the soak and the tests: the Prometheus text
of ``/metrics`` parsed once, ``/api/status`` fetched without an event loop (the
load benchmark's coordinator is plain blocking code), and the percentile and
trend helpers every report uses.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text page, keyed by its name and labels as written:
    ``{'playcast_sessions_ended_total{reason="client_left"}': 3.0, ...}``."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[key] = float(value)
    return samples


def _labels(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split('",'):
        label, sep, value = part.partition('="')
        if sep:
            labels[label.strip()] = value.rstrip('"')
    return name, labels


def metric_sum(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """The sum of metric ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, have = _labels(key)
        if base == name and all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def by_label(samples: Mapping[str, float], name: str, label: str | None = None) -> dict[str, float]:
    """Metric ``name`` split by one label (``None``: its first label):
    ``{label value: sum of its samples}``."""
    out: dict[str, float] = {}
    for key, value in samples.items():
        base, have = _labels(key)
        if base != name or not have:
            continue
        group = have.get(label) if label is not None else next(iter(have.values()))
        if group is not None:
            out[group] = out.get(group, 0.0) + value
    return out


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def fetch_metrics(base_url: str, *, timeout: float = 30.0) -> dict[str, float]:
    """``GET {base_url}/metrics``, parsed (blocking)."""
    return parse_metrics(_get(f"{base_url}/metrics", timeout).decode())


def fetch_status(base_url: str, *, check: bool = False, timeout: float = 30.0) -> dict[str, Any]:
    """``GET {base_url}/api/status`` (``?check=1``: with its invariant check), blocking."""
    doc: dict[str, Any] = json.loads(
        _get(f"{base_url}/api/status{'?check=1' if check else ''}", timeout)
    )
    return doc


def percentile(values: Iterable[float], p: float) -> float:
    """Linear interpolation between the closest ranks (``p`` in 0..100); NaN for no values."""
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def nearest_rank(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100): a value that was measured; 0 for none."""
    s = sorted(values)
    if not s:
        return 0.0
    return s[max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))]


def slope_per_minute(points: Iterable[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; 0 for fewer than two."""
    pts = list(points)
    if len(pts) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return 0.0
    return 60.0 * sum((x - mx) * (y - my) for x, y in pts) / sxx
