"""One phone's supervisor: its worker, its health, its place in the pool.

Two tasks per phone. ``_supervise`` keeps exactly one worker process
running while the phone may serve (adb says ``device``, no hold) and none
otherwise: it starts one (after a health reading),
restarts one that exits on the game backoff, stops the worker of a phone
that disappears at once, and drains the worker of a phone that must leave
the pool (after its session). ``_watch_health`` reads the phone's health
every ``health_interval`` and between sessions, sets or lifts the holds, and
wakes a serving phone whose screen went dark or locked.

Draining: a worker announces its drain signal in its first event
(``worker_starting``: ``drain_signal``, SIGUSR1) and, sent it, finishes its
session in progress and exits instead of registering again (an idle one
leaves at once). A worker that has not said it yet is still starting, not
serving anyone: it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from playcast.backends.adb import Adb
from playcast.farm import worker_log as wl
from playcast.farm.devices import DeviceRow
from playcast.farm.events import event
from playcast.farm.health import Health, read_health
from playcast.farm.settings import FarmSettings, worker_argv
from playcast.farm.states import Hold, State, WorkerState, next_holds, phone_state
from playcast.farm.worker_proc import WorkerRun
from playcast.farm.zygote import Zygote, ZygoteError
from playcast.worker.backoff import Backoff

log = logging.getLogger("playcast.farm")

# argparse's exit status: the worker flags are wrong for every phone alike.
USAGE_EXIT = 2


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    client_id: str
    started_at: float  # time.time()


class Phone:
    def __init__(
        self,
        serial: str,
        settings: FarmSettings,
        zygote: Zygote,
        on_fatal: Callable[[str], None],
    ) -> None:
        self.serial = serial
        self.settings = settings
        self.zygote = zygote
        self._on_fatal = on_fatal
        self.adb = Adb(settings.adb, serial, timeout=settings.health_timeout)
        self.row: DeviceRow | None = None  # None: not in adb's list
        self.health: Health | None = None
        self.holds: frozenset[Hold] = frozenset()
        self.worker: WorkerRun | None = None
        self.worker_state = WorkerState.NONE
        self.worker_id: str | None = None
        self.registered_at: float | None = None
        self.session: SessionInfo | None = None
        self.failing: str | None = None  # why its worker or game keeps failing
        self.restarts = 0  # workers restarted after an exit nobody asked for
        self.starts = 0
        self.drain_signal: int | None = None  # announced by the running worker
        self.draining = False
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self._restart_at = 0.0
        self._health_fresh = False  # read since adb last changed its word on it
        self._state = State.OFFLINE
        self.state_since = time.time()
        self._changed = asyncio.Event()
        self._read_now = asyncio.Event()
        self._health_lock = asyncio.Lock()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- the farm's side --------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"phone-{self.serial}"),
            asyncio.create_task(self._watch_health(), name=f"health-{self.serial}"),
        ]

    def update(self, row: DeviceRow | None) -> None:
        """adb's latest word on this phone (None: no longer listed)."""
        before = self.row.state if self.row is not None else None
        self.row = row
        after = row.state if row is not None else None
        if before != after:
            event("phone_seen" if after else "phone_gone", serial=self.serial, adb_state=after)
            self._health_fresh = False  # a new plug (or state): read it again
            if after == "device":
                self._read_now.set()
            self._changed.set()
            self._refresh()

    async def close(self) -> None:
        """Stop the worker (its session ends, its player is told)."""
        self._closing = True
        self._changed.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        worker = self.worker
        if worker is not None and worker.running:
            await worker.stop(self.settings.stop_timeout)

    @property
    def state(self) -> State:
        return self._state

    @property
    def present(self) -> bool:
        return self.row is not None and self.row.state == "device"

    def may_serve(self) -> bool:
        return not self._closing and self.present and not self.holds

    # --- the worker ---------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            self._changed.clear()  # first: a change during the checks below wakes the wait
            if not self.may_serve():
                await self._wait_change()
            elif (delay := self._restart_at - time.monotonic()) > 0:
                await self._wait_change(delay)
            elif not self._health_fresh:
                self._read_now.set()  # a hot phone is not started at all
                await self._wait_change()
            else:
                await self._run_worker()

    async def _wait_change(self, timeout: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    async def _run_worker(self) -> None:
        s = self.settings
        run = WorkerRun(self.serial, worker_argv(s, self.serial), self.zygote, self._on_line)
        self.worker, self.worker_state = run, WorkerState.STARTING
        self.drain_signal, self.draining = None, False
        self.starts += 1
        try:
            await run.start()
        except (OSError, ZygoteError) as exc:
            self.worker, self.worker_state = None, WorkerState.NONE
            self._restart_at = time.monotonic() + self.backoff.next_delay()
            self._failed(f"cannot start a worker: {exc}")
            return
        event("worker_started", serial=self.serial, pid=run.pid, starts=self.starts)
        self._refresh()
        exited = asyncio.create_task(run.wait())
        try:
            while not exited.done():
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait())
                await asyncio.wait({exited, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if exited.done():
                    break
                if not self.present or self._closing:
                    await run.stop(s.stop_timeout)  # unplugged: its player is told at once
                elif self.holds and not self.draining:
                    self._drain(run)  # a phone that recovers meanwhile gets a new worker
            code = await exited
        finally:
            if not exited.done():  # cancelled (farm closing): close() stops it
                exited.cancel()
        self._worker_gone(run, code)

    def _drain(self, run: WorkerRun) -> None:
        """Out of the pool after the session in progress (at once when idle)."""
        self.draining = True
        how = signal.Signals(self.drain_signal).name if self.drain_signal else "SIGTERM"
        event(
            "worker_draining",
            serial=self.serial,
            holds=",".join(sorted(self.holds)),
            signal=how,
            busy=self.worker_state is WorkerState.BUSY,
        )
        if self.drain_signal is not None:
            run.send(self.drain_signal)
            run.stop_requested = True
        else:
            self._stop_soon(run)

    def _stop_soon(self, run: WorkerRun) -> None:
        task = asyncio.create_task(self._stop(run))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _stop(self, run: WorkerRun) -> None:
        await run.stop(self.settings.stop_timeout)

    def _worker_gone(self, run: WorkerRun, code: int | None) -> None:
        ran = time.monotonic() - run.started_at
        self.worker, self.worker_state, self.worker_id = None, WorkerState.NONE, None
        self.session, self.registered_at, self.draining = None, None, False
        event("worker_exited", serial=self.serial, pid=run.pid, code=code, ran_s=round(ran, 2))
        if run.stop_requested:
            self._refresh()
            return
        if code == USAGE_EXIT and any("usage:" in line for line in run.tail):
            self._on_fatal(f"the worker refused its flags: {' | '.join(run.tail)[-600:]}")
        if ran >= self.settings.stable_after:
            self.backoff.reset()
        self.restarts += 1
        delay = self.backoff.next_delay()
        self._restart_at = time.monotonic() + delay
        how = f"exited ({code})" if code is not None else "died with its zygote"
        tail = " | ".join(list(run.tail)[-3:])
        self._failed(f"worker {how} after {ran:.1f} s: {tail}"[:500])
        log.warning("[%s] worker %s; again in %.2f s", self.serial, how, delay)

    def _failed(self, detail: str) -> None:
        self.failing = detail
        self._refresh()

    def _on_line(self, line: wl.LogLine) -> None:
        match line.event:
            case wl.Registered(worker_id=worker_id):
                self.worker_state, self.worker_id = WorkerState.AVAILABLE, worker_id
                self.registered_at = time.time()
                self.failing = None
                event("worker_registered", serial=self.serial, worker_id=worker_id)
            case wl.SessionStarted(session_id=sid, client_id=cid):
                self.worker_state = WorkerState.BUSY
                self.session = SessionInfo(sid, cid, time.time())
            case wl.SessionEnded():
                self.worker_state, self.session, self.worker_id = WorkerState.STARTING, None, None
                self._read_now.set()  # between sessions: is it still fit to serve?
            case wl.Unregistered() if self.worker_state is WorkerState.AVAILABLE:
                self.worker_state, self.worker_id = WorkerState.STARTING, None
            case wl.BackendFailing(streak=streak, detail=detail):
                if self.worker_state is not WorkerState.BUSY:
                    self.worker_state, self.worker_id = WorkerState.STARTING, None
                    self.failing = f"game failure {streak} in a row: {detail}"[:500]
            case wl.Capabilities(drain_signal=name) if name:
                with contextlib.suppress(KeyError):
                    self.drain_signal = signal.Signals[name].value
        self._refresh()

    # --- health -----------------------------------------------------------------

    async def _watch_health(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.health_interval):
                    await self._read_now.wait()
            self._read_now.clear()
            if self.present:
                await self._check_health()

    async def _check_health(self) -> None:
        async with self._health_lock:
            health = await read_health(self.adb, self.settings.game, self.settings.health_timeout)
        if not self.present:
            return  # unplugged while reading: says nothing of this plug
        self.health = health
        self._health_fresh = True
        if health.error is not None:
            log.warning("[%s] health reading failed: %s", self.serial, health.error)
        holds = next_holds(self.holds, health, self.settings.limits)
        if holds != self.holds:
            added, lifted = holds - self.holds, self.holds - holds
            self.holds = holds
            fields = {"temperature_c": health.temperature_c, "battery": health.battery_percent}
            if added:
                event("phone_held", serial=self.serial, why=",".join(sorted(added)), **fields)
            if lifted:
                event("phone_released", serial=self.serial, why=",".join(sorted(lifted)), **fields)
        elif (
            # Serving, yet dark or locked (turned off by hand): a watchdog
            # behind the worker, which wakes and unlocks before each launch.
            self.may_serve()
            and (health.screen_on is False or health.keyguard_showing)
            and (failed := await self.adb.wake_and_unlock()) is not None
        ):
            log.warning("[%s] wake: %s", self.serial, failed)
        self._changed.set()
        self._refresh()

    # --- state ----------------------------------------------------------------------

    def _refresh(self) -> None:
        adb_state = self.row.state if self.row is not None else None
        state = phone_state(adb_state, self.worker_state, self.holds, self.failing is not None)
        if state is not self._state:
            event("phone_state", serial=self.serial, state=state.value, was=self._state.value)
            self._state = state
            self.state_since = time.time()

    def snapshot(self) -> dict[str, Any]:
        """This phone in /status."""
        row, run, session = self.row, self.worker, self.session
        return {
            "serial": self.serial,
            "state": self._state.value,
            "since": round(self.state_since, 3),
            "adb_state": row.state if row is not None else None,
            "model": row.model if row is not None else None,
            "usb": row.usb if row is not None else None,
            "holds": sorted(self.holds),
            "detail": self.failing,
            "worker": None
            if run is None
            else {
                "pid": run.pid,
                "state": self.worker_state.value,
                "worker_id": self.worker_id,
                "registered_at": self.registered_at,
                "draining": self.draining,
            },
            "session": None
            if session is None
            else {
                "session_id": session.session_id,
                "client_id": session.client_id,
                "started_at": round(session.started_at, 3),
            },
            "starts": self.starts,
            "restarts": self.restarts,
            "health": self.health.as_json() if self.health is not None else None,
        }
