"""``playcast demo``: one command brings up a playable system and takes it down."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import psutil
from playcast_testing.peer import TestPeer
from playcast_testing.workers import free_port


async def test_demo_starts_server_and_two_workers_and_stops_them_all() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "playcast",
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with asyncio.timeout(90):
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            assert f"open http://127.0.0.1:{port}/" in line
            children = psutil.Process(proc.pid).children()
            assert len(children) == 3
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(url + "/api/status") as r:
                        doc = await r.json()
                    if [w["status"] for w in doc["workers"]] == ["available"] * 2:
                        break
                    await asyncio.sleep(0.05)  # status has no push channel
            async with TestPeer.join(url) as peer:
                await peer.wait_connected()
                await peer.touch(0.5, 0.5)
                await peer.wait_mark(0.5, 0.5)
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            rest = (await proc.stdout.read()).decode()
            assert "stopped" in rest
            assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
