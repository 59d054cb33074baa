"""adb's device list, followed live through ``adb track-devices -l``.

adb answers with the whole list at once and again on every change (a phone
plugged, unplugged, authorized, gone offline), so the farm hears of a new
phone within milliseconds and never polls. When ``adb track-devices`` exits
(the adb server was killed or restarted, or the client died), the tracker
starts it again on a short backoff: the first retry within a tenth of a
second, later ones further apart while adb keeps failing. The list it had
stays in force meanwhile; the next one replaces it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from playcast.farm.devices import DeviceRow, FramingError, TrackDecoder
from playcast.worker.backoff import Backoff

log = logging.getLogger("playcast.farm.tracker")

OnList = Callable[[dict[str, DeviceRow]], None]


class DeviceTracker:
    def __init__(
        self,
        adb: str,
        on_list: OnList,
        *,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        self.adb = adb
        self.on_list = on_list
        self.backoff = Backoff(backoff_base, backoff_cap)
        self.connected = False
        self.restarts = 0
        self.lists = 0
        self.last_error = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def run(self) -> None:
        """Until cancelled."""
        try:
            while True:
                started = time.monotonic()
                await self._follow()
                if time.monotonic() - started >= self.backoff.cap:
                    self.backoff.reset()  # it ran well: the next loss starts over
                delay = self.backoff.next_delay()
                self.restarts += 1
                log.warning("adb track-devices ended (%s); again in %.2f s", self.last_error, delay)
                await asyncio.sleep(delay)
        finally:
            await self._reap()

    async def _follow(self) -> None:
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                self.adb,
                "track-devices",
                "-l",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self.last_error = f"cannot run {self.adb}: {exc}"
            return
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.create_task(self._read_errors(proc.stderr))
        decoder = TrackDecoder()
        try:
            while data := await proc.stdout.read(65536):
                for rows in decoder.feed(data):
                    self.connected = True
                    self.lists += 1
                    self.on_list(rows)
            await proc.wait()
            self.last_error = f"exit {proc.returncode}"
        except FramingError as exc:
            self.last_error = str(exc)
        finally:
            self.connected = False
            await self._reap()
            with contextlib.suppress(asyncio.CancelledError):
                await errors

    async def _read_errors(self, stderr: asyncio.StreamReader) -> None:
        async for raw in stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                # "* daemon not running; starting now": adb starts its server itself.
                log.info("adb: %s", line)
                self.last_error = line

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
