"""Each benchmark's short version, so CI proves they run and measure.

Speed targets are judged by the full runs on a quiet machine (docs/performance.md);
here a benchmark fails only when something it drives fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("signaling_load.py", ("setup latency",)),
        # Two nodes on a real redis-server, worker and player on different nodes.
        ("cluster_load.py", ("Redis commands per setup", "capacity")),
        # The gathering window's sleep on the node's loop, against asyncio's.
        ("timer_jitter.py", ("PreciseSleep", "ended early")),
        # What checking a join ticket costs (issue 27).
        ("tickets.py", ("a player's ticket, the worst case",)),
        ("worker_latency.py", ("touch",)),
        # Socket drop to resumed, on one node and across nodes, and a node kill.
        ("resume_latency.py", ("one_node_p95_ms", "across_nodes_p95_ms", "frames_lost")),
        # Tap to photon in Chromium (H.264, VP8) and Firefox (VP8) side by side,
        # and tap to sound with the audio/video offset for the same taps.
        pytest.param(
            "browser_latency.py",
            ("tap", "Firefox VP8", "sound_p50_ms", "av_offset", "Chromium H264 sound, mean"),
            marks=[pytest.mark.browser, pytest.mark.firefox],
        ),
        # Play through the impairment relay (issue 24): clean, outages, a 500 kbit/s cap.
        pytest.param(
            "network.py", ("clean", "outages", "cap500k", "peak5"), marks=pytest.mark.browser
        ),
        # The worker's own delay for the phone's video, touches and Opus.
        ("android_latency.py", ("touch", "audio  device socket -> RTP packet out")),
        # Six fake phones on the real farm: plug to registered, unplug to told,
        # flapping (fails on a duplicate worker or a stray process), CPU at rest.
        (
            "farm.py",
            (
                "plug to registered",
                "CPU per registration",
                "cold start",
                "unplug mid-session",
                "farm at rest",
                "flapping",
            ),
        ),
        # The phone's ladder: the gap without a picture at each rung change.
        ("phone_ladder.py", ("gap without a new picture", "rung changes")),
    ],
)
def test_quick_benchmark_runs(script: str, expect: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=220,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert all(e in output for e in expect), output[-4000:]
