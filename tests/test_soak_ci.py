"""The one-minute soak (bench/soak.py --ci) as a test: real server, real workers,
sessions ended by every cause, no leak, no broken invariant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_soak_ci() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--ci"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SOAK_RESULT ")]
    assert lines, output[-6000:]
    result = json.loads(lines[-1].removeprefix("SOAK_RESULT "))
    assert result["passed"], result["failures"]
    causes = {cause for cause, n in result["ended_by_cause"].items() if n > 0}
    assert len(causes) >= 5, result["ended_by_cause"]
    assert result["sessions_started"] > 0
