"""Start a real worker process and follow its lifecycle through its log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator

import psutil  # type: ignore[import-untyped]

from playcast_testing.processes import LoggedProcess

# Small enough that restarts and reconnects take tens of milliseconds in tests.
FAST_RESTART = ("--restart-delay", "0.05", "--backoff-base", "0.05", "--backoff-cap", "0.5")


class WorkerProcess(LoggedProcess):
    """A running ``playcast worker``; ``lines`` is everything it has logged."""

    label = "worker"

    async def wait_for_log(
        self, pattern: str, *, after: int = 0, timeout: float = 30.0
    ) -> tuple[int, re.Match[str]]:
        """The first line from index ``after`` on matching ``pattern``, and its index."""
        return await self.find_line(pattern, after=after, timeout=timeout)

    async def wait_registered(self, *, after: int = 0, timeout: float = 30.0) -> tuple[int, str]:
        """Index of the next ``registered`` line from ``after`` on, and the worker id."""
        i, m = await self.wait_for_log(r"registered worker_id=(\S+)", after=after, timeout=timeout)
        return i, m.group(1)

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
        await worker.reap()


def free_port() -> int:
    """A port nothing listens on right now (for a server started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
