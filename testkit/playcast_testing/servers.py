"""Start a real signaling server process and watch what it logs.

Two launchers with one command line and one port discovery: ``running_server``
for asyncio tests and benchmarks (the log followed line by line), and
``BlockingServer`` for plain blocking code such as the load benchmark's
coordinator (the log in a file, the process sampled with psutil).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

from playcast_testing.metrics import fetch_metrics, fetch_status, parse_metrics
from playcast_testing.processes import LoggedProcess

HOST = "127.0.0.1"
# The server's first line once its socket is bound; --port 0 picks a free port.
LISTENING = r"server_listening .* port=(\d+)"


def peak_rss(pid: int) -> int:
    """VmHWM: the largest RSS the process had (since start or the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return int(psutil.Process(pid).memory_info().rss)


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def server_argv(
    flags: Sequence[str] = (),
    settings: Mapping[str, float | str] | None = None,
    python_args: Sequence[str] = (),
) -> list[str]:
    """``python [python_args] -m playcast server`` on 127.0.0.1, port 0, then ``settings``
    as flags (``heartbeat_interval=0.2`` -> ``--heartbeat-interval 0.2``), then ``flags``."""
    argv = [sys.executable, *python_args, "-m", "playcast", "server"]
    argv += ["--host", HOST, "--port", "0"]
    for key, value in (settings or {}).items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv + list(flags)


class ServerProcess(LoggedProcess):
    """A running ``playcast server`` child process on a free port."""

    label = "server"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"{self.ws_base}/ws/{role}"

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def peak_rss(self) -> int:
        return peak_rss(self.proc.pid)

    def reset_peak_rss(self) -> None:
        reset_peak_rss(self.proc.pid)

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

    async def wait_serving(self, *, timeout: float = 30.0) -> None:
        """Until /healthz says 200: listening is not serving (a cluster node
        takes peers once it reaches Redis and has announced itself)."""
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
                await asyncio.sleep(0.02)

    async def assert_consistent(self) -> dict[str, Any]:
        """No broken invariant, and /metrics agrees with /api/status."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/api/status?check=1") as r:
                doc: dict[str, Any] = await r.json()
            async with http.get(f"{self.url}/metrics") as r:
                metrics = await r.text()
        assert doc["violations"] == [], doc["violations"]
        gauges = parse_metrics(metrics)
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
    proc = await asyncio.create_subprocess_exec(
        *server_argv(flags, settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(proc)
    try:
        m = await server.wait_for_log(LISTENING)
        server.port = int(m.group(1))
        yield server
    finally:
        await server.reap()


class BlockingServer:
    """``playcast server`` on a free port for blocking code, its output in ``log_path``.

    The environment's ``PLAYCAST_*`` variables are dropped, so only ``flags``
    configure it. ``profile``: run it under cProfile, the profile written there
    when it stops.
    """

    def __init__(self, flags: Sequence[str], log_path: Path, profile: str | None = None) -> None:
        python_args = ["-m", "cProfile", "-o", profile] if profile else []
        self.argv = server_argv(flags, python_args=python_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYCAST_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)
        self.port = self._wait_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _wait_port(self, timeout: float = 30.0) -> int:
        pattern = re.compile(LISTENING.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.log_path.read_bytes())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)  # a log file has no change notification to wait on
        raise RuntimeError(f"server did not start; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def cpu_split(self) -> tuple[float, float]:
        t = self.ps.cpu_times()
        return float(t.user), float(t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def peak_rss(self) -> int:
        """VmHWM: the largest RSS the process ever had."""
        return peak_rss(self.proc.pid)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by its text (name plus labels)."""
        return fetch_metrics(self.url)

    def status(self, *, check: bool = False) -> dict[str, Any]:
        return fetch_status(self.url, check=check)

    def stop(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM, then wait: (exit code, seconds to exit)."""
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code, time.monotonic() - t

    def log_problems(self) -> list[str]:
        """The first tracebacks, errors and abuse closes the server logged."""
        bad = re.compile(r"Traceback|ERROR|sweep failed|_slow_closed|_flood_closed")
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if bad.search(line)][:10]
