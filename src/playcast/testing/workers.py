"""Start a real worker process and follow its lifecycle through its log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator

import psutil  # type: ignore[import-untyped]

# Small enough that restarts and reconnects take tens of milliseconds in tests.
FAST_RESTART = ("--restart-delay", "0.05", "--backoff-base", "0.05", "--backoff-cap", "0.5")


class WorkerProcess:
    """A running ``playcast worker``; ``lines`` is everything it has logged."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if os.environ.get("PLAYCAST_TEST_ECHO"):
                print("worker:", line, file=sys.stderr)
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_log(
        self, pattern: str, *, after: int = 0, timeout: float = 30.0
    ) -> tuple[int, re.Match[str]]:
        """The first line from index ``after`` on matching ``pattern``, and its index."""
        regex = re.compile(pattern)
        found: list[tuple[int, re.Match[str]]] = []

        def check() -> bool:
            for i in range(after, len(self.lines)):
                m = regex.search(self.lines[i])
                if m:
                    found.append((i, m))
                    return True
            if self._reader.done():
                raise RuntimeError(f"worker exited before logging {pattern!r}")
            return False

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(check)
        return found[0]

    async def wait_registered(self, *, after: int = 0, timeout: float = 30.0) -> tuple[int, str]:
        """Index of the next ``registered`` line from ``after`` on, and the worker id."""
        i, m = await self.wait_for_log(r"registered worker_id=(\S+)", after=after, timeout=timeout)
        return i, m.group(1)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    def unread_bytes_from(self, port: int) -> int:
        """Bytes the kernel holds for this worker on its TCP link to ``port``.

        Lets a test see that a frozen worker has mail waiting (Linux only).
        """
        local_ports = {
            c.laddr.port
            for c in psutil.Process(self.proc.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port
        }
        total = 0
        with open("/proc/net/tcp") as table:
            next(table)
            for row in table:
                fields = row.split()
                local, remote, queues = fields[1], fields[2], fields[4]
                if (
                    int(local.split(":")[1], 16) in local_ports
                    and int(remote.split(":")[1], 16) == port
                ):
                    total += int(queues.split(":")[1], 16)
        return total

    async def wait_unread_from(self, port: int, timeout: float = 30.0) -> None:
        """Until the kernel holds data from ``port`` for this (frozen) worker."""
        async with asyncio.timeout(timeout):
            while True:
                if self.unread_bytes_from(port):
                    return
                await asyncio.sleep(0.01)  # kernel state: nothing to await but a poll

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.send_signal(sig)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code


@contextlib.asynccontextmanager
async def running_worker(server: str, *flags: str) -> AsyncIterator[WorkerProcess]:
    """``playcast worker --server SERVER`` (synthetic backend), killed on exit."""
    argv = [sys.executable, "-m", "playcast", "worker", "--server", server, *FAST_RESTART, *flags]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    worker = WorkerProcess(proc)
    try:
        yield worker
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)
            await asyncio.wait_for(worker._reader, 10)


def free_port() -> int:
    """A port nothing listens on right now (for a server started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
