"""A child process whose log a test follows line by line, waiting on lines, not time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys


class LoggedProcess:
    """Collects a child's combined output in ``lines`` as it is written."""

    label = "process"

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
                print(f"{self.label}:", line, file=sys.stderr)
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def find_line(
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
                raise RuntimeError(f"{self.label} exited before logging {pattern!r}")
            return False

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(check)
        return found[0]

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

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

    async def reap(self) -> None:
        """Kill if still running (thawing it first) and collect it."""
        if self.proc.returncode is None:
            self.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)
            await asyncio.wait_for(self._reader, 10)
