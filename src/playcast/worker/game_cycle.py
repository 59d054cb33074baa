"""The link core's game side: the states between two links to the server.

``GameCycle`` starts, resets and health-checks the game, waits on the
backoffs between tries, and decides what follows the end of a link. It
holds the machine's state and its effects; ``Link`` (``worker/link.py``)
builds on it with the states on a socket. No I/O, like all of the core.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from playcast.worker.backoff import Backoff
from playcast.worker.link_events import (
    CheckHealth,
    Connect,
    Effect,
    Exit,
    ResetBackend,
    StartBackend,
)
from playcast.worker.link_log import log_event
from playcast.worker.link_state import (
    SESSION_STATES,
    Course,
    LinkSettings,
    Phase,
    Plan,
    State,
    Then,
)

log = logging.getLogger("playcast.worker")


class GameCycle:
    """STARTING, RESETTING, CHECKING, CONNECTING and WAITING; the game's
    failures; the drain."""

    def __init__(self, settings: LinkSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        rng = rng or random.Random()
        self.server_backoff = Backoff(settings.backoff_base, settings.backoff_cap, rng)
        self.backend_backoff = Backoff(settings.backoff_base, settings.backoff_cap, rng)
        self.state = State.STARTING
        self.course = Course.SERVE
        self._effects: list[Effect] = []
        # Counters for logs and /metrics.
        self.failures: Counter[str] = Counter()  # by kind: start, reset, health, idle, session
        self.failure_streak = 0
        self.last_delay = 0.0
        self._healthy_since: float | None = None  # for stable_after
        # WAITING: until when, and what then; RESETTING: the wait that follows.
        self._wake_at = 0.0
        self._then = Then.CHECK
        self._after_reset = (0.0, "")

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def done(self) -> bool:
        return self.state is State.STOPPED

    def start(self, now: float) -> None:
        self.state = State.STARTING
        self._emit(StartBackend())

    def effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def _emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def _on_started(self, ok: bool, detail: str, now: float) -> None:
        if self.state is State.STARTING:
            if ok:
                self._check()
            else:
                self._backend_down("start", detail, now, then=Then.START)

    def _on_reset(self, ok: bool, detail: str, now: float) -> None:
        if self.state is State.RESETTING:
            if ok:
                delay, why = self._after_reset
                self._wait(delay, Then.CHECK, why, now)
            else:
                self._backend_down("reset", detail, now)

    def _on_checked(self, ok: bool, detail: str, now: float) -> None:
        """CHECKING: a healthy game gets a socket."""
        if ok:
            if self._healthy_since is None:
                self._healthy_since = now
            self.state = State.CONNECTING
            self._emit(Connect())
        else:
            self._backend_down("health", detail, now)

    def _connect_failed(self, now: float) -> None:
        """CONNECTING: the server is unreachable; the server backoff, then a check."""
        delay = self.server_backoff.next_delay()
        self._wait(delay, Then.CHECK, "server unreachable", now)

    def _on_wake(self, now: float) -> None:
        """WAITING: the timer fired."""
        if now < self._wake_at:
            return
        match self._then:
            case Then.START:
                self.state = State.STARTING
                self._emit(StartBackend())
            case Then.RESET:
                self._reset((0.0, ""))
            case Then.CHECK:
                self._check()

    def _game_failed(self, detail: str, now: float) -> None:
        """A pushed failure between links."""
        if self.state in (State.CHECKING, State.CONNECTING) or (
            self.state is State.WAITING and self._then is Then.CHECK
        ):
            # Not registered yet: never register a game known to be down.
            self._backend_down("idle", detail, now)
        # Starting, resetting, leaving, or already waiting to reset: the
        # running step or the next health check sees it.

    def _check(self) -> None:
        self.state = State.CHECKING
        self._emit(CheckHealth())

    def _reset(self, after: tuple[float, str]) -> None:
        self.state = State.RESETTING
        self._after_reset = after
        self._emit(ResetBackend())

    def _wait(self, delay: float, then: Then, why: str, now: float) -> None:
        if why:
            log.info("restarting in %.2f s (%s)", delay, why)
        self.state = State.WAITING
        self._wake_at = now + delay
        self._then = then

    def _backend_down(self, kind: str, detail: str, now: float, then: Then = Then.RESET) -> None:
        """One failure of the game: one log line, one count, a backoff wait."""
        self._recovered(now)
        self._healthy_since = None
        self.failures[kind] += 1
        streak = self.failure_streak = self.backend_backoff.attempt + 1
        delay = self.last_delay = self.backend_backoff.next_delay()
        log_event(
            "backend_failure",
            f"backend failure {streak} in a row ({kind}): {detail}; {then.value} in {delay:.2f} s",
            logging.ERROR,
            streak=streak,
            kind=kind,
            detail=detail,
            delay=round(delay, 3),
        )
        self._wait(delay, then, "", now)

    def _recovered(self, now: float) -> None:
        """A game healthy for ``stable_after`` starts a new failure streak."""
        since = self._healthy_since
        if since is not None and now - since >= self.settings.stable_after:
            self.backend_backoff.reset()
            self.failure_streak = 0

    def _drain(self) -> bool:
        """Serve no more (SIGUSR1). Between links the worker exits at once; a
        session in progress goes on, and its link's end is the worker's
        (``_link_ended``). True: the link must end now (registered, idle)."""
        if self.course is Course.DRAIN:
            return False
        self.course = Course.DRAIN
        if self.state in SESSION_STATES:
            log.info("draining: exiting after the session in progress")
            return False
        if self.phase is Phase.LINKED:
            return True
        self._drained()
        return False

    def _drained(self) -> None:
        self.state = State.STOPPED
        log_event("worker_drained", "drained: exiting instead of registering again")
        self._emit(Exit())

    def _link_ended(self, plan: Plan, had_session: bool, fault: str | None, now: float) -> None:
        """What follows a link: the game backoff after a failure, else a
        fresh game after a session, then a pause that depends on the plan;
        for a drained worker, the end."""
        if self.course is Course.DRAIN:
            self._drained()
            return
        if fault is not None or plan is Plan.BACKEND_FAILED:
            kind = "session" if had_session else "idle"
            self._backend_down(kind, fault or "backend failed", now)
            return
        if plan is Plan.LOST:
            after = (self.server_backoff.next_delay(), Plan.LOST.value)
        elif plan is Plan.RECONNECT:
            after = (0.0, Plan.RECONNECT.value)
        else:
            after = (self.settings.restart_delay, Plan.RESTART.value)
        if had_session:
            self._reset(after)  # a fresh game for the next player
        else:
            self._wait(after[0], Then.CHECK, after[1], now)
