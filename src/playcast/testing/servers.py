"""Start a real signaling server process and watch what it logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp


class ServerProcess:
    """A running ``playcast server`` child process on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"{self.ws_base}/ws/{role}"

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if os.environ.get("PLAYCAST_TEST_ECHO"):
                print("server:", line, file=sys.stderr)
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_log(
        self, pattern: str, *, after: int = 0, timeout: float = 30.0
    ) -> re.Match[str]:
        """The first log line from index ``after`` on matching ``pattern``."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def check() -> bool:
            for line in self.lines[after:]:
                m = regex.search(line)
                if m:
                    found.append(m)
                    return True
            if self._reader.done():
                raise RuntimeError(f"server exited before logging {pattern!r}")
            return False

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(check)
        return found[0]

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

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal (unless ``sig`` is None: already signalled) and wait for the exit code."""
        if sig is not None and self.proc.returncode is None:
            self.send_signal(sig)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code


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
        if proc.returncode is None:
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)
            await asyncio.wait_for(server._reader, 10)


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
