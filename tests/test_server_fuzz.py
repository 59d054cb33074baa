"""Random frames at both real endpoints: the server stays up and consistent."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hub_properties import frames


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "playcast", "server", "--host", "127.0.0.1", "--port", "0",
         "--heartbeat-interval", "0.5", "--shutdown-ack-timeout", "0.5",
         "--handshake-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"server_listening .* port=(\d+)", line)
        if m:
            break
    else:
        raise RuntimeError("server did not start")
    # Keep draining its log so it never blocks on a full pipe.
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    yield f"http://127.0.0.1:{m.group(1)}"
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    drain.wait(timeout=30)


async def _play(url: str, script: list[tuple[str, str]]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        sockets = {
            "worker": await http.ws_connect(f"{url}/ws/worker"),
            "client": await http.ws_connect(f"{url}/ws/client"),
        }
        for role, frame in script:
            ws = sockets[role]
            if ws.closed:
                continue
            with contextlib.suppress(ConnectionError):
                await ws.send_str(frame)
        for ws in sockets.values():
            await ws.close()
        async with http.get(f"{url}/api/status?check=1") as r:
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
            return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["worker", "client"]), frames()), max_size=30))
def test_random_frames_at_both_endpoints(server_url: str, script: list[tuple[str, str]]) -> None:
    doc = asyncio.run(_play(server_url, script))
    assert doc["violations"] == []
