"""One phone's worker: its own process, its own process group, its log read live.

Isolation is the point: a worker that crashes, hangs or leaks takes nothing
with it but its own phone's session. Each is forked by the farm's zygote
(``farm/zygote.py``) into a session of its own (its own process group), so
stopping one also ends the adb children it leaves behind and nothing else;
each dies with the zygote, which dies with the farm (PR_SET_PDEATHSIG), so a
killed farm leaves no worker serving players behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from playcast.farm.worker_log import LogLine, parse_line
from playcast.farm.zygote import Child, Zygote

log = logging.getLogger("playcast.farm.worker")

# Long enough for a traceback's last lines: the detail of a worker that failed.
TAIL_LINES: Final = 20
LINE_LIMIT: Final = 1 << 20


class WorkerRun:
    """A ``playcast worker`` process for one phone, from start to reaped."""

    def __init__(
        self,
        serial: str,
        argv: Sequence[str],
        zygote: Zygote,
        on_line: Callable[[LogLine], None],
    ) -> None:
        self.serial = serial
        self.argv = list(argv)  # after ``playcast``: ["worker", ...]
        self.zygote = zygote
        self._on_line = on_line
        self.child: Child | None = None
        self.started_at = 0.0  # time.monotonic()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stop_requested = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    @property
    def running(self) -> bool:
        return self.child is not None and not self.child.exited.done()

    async def start(self) -> None:
        """Forked and its log followed; ``ZygoteError`` when there is no worker."""
        self.started_at = time.monotonic()
        ours, theirs = os.pipe2(os.O_CLOEXEC)
        try:
            self.child = await self.zygote.spawn(
                self.argv, ["playcast", "worker", "--serial", self.serial], theirs
            )
        except BaseException:
            os.close(ours)
            raise
        finally:
            os.close(theirs)  # the worker has its own copy
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(ours, "rb", buffering=0)
        )
        self._reader = asyncio.create_task(self._read(stream), name=f"worker-log-{self.serial}")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
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

    async def wait(self) -> int | None:
        """The exit code (None: unknown, its zygote died first), once the
        process is gone, its group with it, and its log read to the end."""
        child = self.child
        assert child is not None
        code = await asyncio.shield(child.exited)
        self._kill_group()
        if self._reader is not None:
            await self._reader
        child.close()
        return code

    def send(self, sig: int) -> None:
        if self.child is not None:
            self.child.signal(sig)

    async def stop(self, grace: float, sig: int = signal.SIGTERM) -> int | None:
        """Ask it to stop (``sig``), then kill its whole group after ``grace``."""
        self.stop_requested = True
        assert self.child is not None
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
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, signal.SIGKILL)
