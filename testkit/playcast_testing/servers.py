"""Start a real signaling server process and watch what it logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from playcast_testing.processes import LoggedProcess


class ServerProcess(LoggedProcess):
    """A running ``playcast server`` child process on a free port."""

    label = "server"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"{self.ws_base}/ws/{role}"

    async def wait_for_log(
        self, pattern: str, *, after: int = 0, timeout: float = 30.0
    ) -> re.Match[str]:
        """The first log line from index ``after`` on matching ``pattern``."""
        return (await self.find_line(pattern, after=after, timeout=timeout))[1]

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/api/status") as r:
            result: dict[str, Any] = await r.json()
            return result

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as r:
            return await r.text()

    async def assert_consistent(self) -> dict[str, Any]:
        """No broken invariant, and /metrics agrees with /api/status."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/api/status?check=1") as r:
                doc: dict[str, Any] = await r.json()
            async with http.get(f"{self.url}/metrics") as r:
                metrics = await r.text()
        assert doc["violations"] == [], doc["violations"]
        gauges = _gauges(metrics)
        assert gauges.get('playcast_connections{role="worker"}', 0) == len(doc["workers"])
        assert gauges.get('playcast_connections{role="client"}', 0) == len(doc["clients"])
        for status in ("available", "busy"):
            listed = sum(1 for w in doc["workers"] if w["status"] == status)
            counted = sum(
                v
                for k, v in gauges.items()
                if k.startswith("playcast_workers{") and f'status="{status}"' in k
            )
            assert listed == counted, (status, listed, counted)
        in_sessions = sum(v for k, v in gauges.items() if k.startswith("playcast_sessions{"))
        assert in_sessions == len(doc["sessions"])
        return doc

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll /api/status until ``predicate`` holds (state has no push channel)."""
        async with asyncio.timeout(timeout):
            while True:
                doc = await self.status()
                if predicate(doc):
                    return doc
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_server(*flags: str, **settings: float | str) -> AsyncIterator[ServerProcess]:
    """``playcast server`` on 127.0.0.1 and a free port, killed on exit.

    ``settings`` become flags: ``heartbeat_interval=0.2`` -> ``--heartbeat-interval 0.2``.
    """
    argv = [sys.executable, "-m", "playcast", "server", "--host", "127.0.0.1", "--port", "0"]
    for key, value in settings.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    argv += list(flags)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(proc)
    try:
        m = await server.wait_for_log(r"server_listening .* port=(\d+)")
        server.port = int(m.group(1))
        yield server
    finally:
        await server.reap()


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
