"""One phone's worker: its own process, its own process group, its log read live.

Isolation is the point: a worker that crashes, hangs or leaks takes nothing
with it but its own phone's session. Each runs in a new session (its own
process group), so stopping one also ends the adb children it leaves behind
and nothing else; and each is told by the kernel (PR_SET_PDEATHSIG) to stop
when the farm dies, so a killed farm leaves no worker serving players behind
its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from playcast.farm.worker_log import LogLine, parse_line

log = logging.getLogger("playcast.farm.worker")

PR_SET_PDEATHSIG: Final = 1
# Long enough for a traceback's last lines: the detail of a worker that failed.
TAIL_LINES: Final = 20


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC: Final = _libc()  # loaded before any fork: the child only calls it


def _die_with_parent() -> None:
    """In the child, between fork and exec: SIGTERM when the farm goes."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class WorkerRun:
    """A ``playcast worker`` process for one phone, from start to reaped."""

    def __init__(
        self,
        serial: str,
        argv: Sequence[str],
        env: dict[str, str],
        on_line: Callable[[LogLine], None],
    ) -> None:
        self.serial = serial
        self.argv = list(argv)
        self.env = env
        self._on_line = on_line
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0  # time.monotonic()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stop_requested = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read(), name=f"worker-log-{self.serial}")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            try:
                raw = await stdout.readline()
            except ValueError:  # a line over the limit: dropped, the stream goes on
                continue
            if not raw:
                return
            line = parse_line(raw.decode("utf-8", "replace"))
            if not line.msg:
                continue
            self.tail.append(line.msg)
            if log.isEnabledFor(line.level):
                log.log(line.level, "[%s] %s", self.serial, line.msg)
            self._on_line(line)

    async def wait(self) -> int:
        """The exit code, once the process is gone and its log read to the end."""
        assert self.proc is not None
        code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self._kill_group()
        return code

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, grace: float, sig: int = signal.SIGTERM) -> int:
        """Ask it to stop (``sig``), then kill its whole group after ``grace``."""
        self.stop_requested = True
        assert self.proc is not None
        self.send(sig)
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(self.wait())
        except TimeoutError:
            log.warning(
                "[%s] worker %s still running after %.1f s: killed", self.serial, self.pid, grace
            )
            self._kill_group()
            return await self.wait()

    def _kill_group(self) -> None:
        """Its adb children, if any outlived it (or all of it, when it hangs)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
