"""The link core's settings, its states, and the records it keeps per link.

``State`` is the whole state machine: every state the worker can be in,
each belonging to one coarse ``Phase`` (what the logs, the metrics and the
tests see). The records hold the data of the states that own them: the
heartbeat of one socket, the one session of a link with its own small
machine (``Media``), and the resume of a dropped socket. None of them
decides what to do; ``worker/link.py`` does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from playcast import protocol as t

# After the heartbeat deadline the worker looks once more before calling the
# server dead: after a stall (a frozen process, a busy machine) the timer can
# fire before the socket is read, and a shutdown may be waiting there.
SILENCE_GRACE: Final = 0.25


@dataclass(frozen=True, slots=True)
class LinkSettings:
    game: str = t.DEFAULT_GAME
    # Sent in every register: the same across restarts (what an operator drains).
    name: str | None = None
    addr: str | None = None
    port: int | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # The "short pause" offline between one player and the next registration.
    restart_delay: float = 1.0
    # Until ``registered`` tells us the heartbeat timeout, this bounds the wait.
    register_timeout: float = 10.0
    # health() polls while available, behind the failures the backend pushes.
    health_interval: float = 5.0
    # A game healthy this long has recovered: its failure streak starts over.
    stable_after: float = 60.0
    # Waits before each resume attempt after a drop (the first at once); then
    # the server backoff, until the grace is over.
    resume_quick: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)


class Phase(enum.Enum):
    """The coarse view of ``State``: what the worker is doing, in a word."""

    STARTING = "starting the game"
    RESETTING = "resetting the game"
    CHECKING = "checking the game"
    CONNECTING = "connecting"
    LINKED = "linked"  # socket open: registering, available or in a session
    LEAVING = "leaving"  # socket closed, waiting for the session to close
    AWAY = "away"  # socket dropped mid-session: the session runs on, resuming
    WAITING = "waiting"
    STOPPED = "stopped"


class State(enum.Enum):
    """Every state of the link; docs/worker.md has the transitions."""

    # Between links: the game, then a socket.
    STARTING = "starting the game"  # StartBackend out
    RESETTING = "resetting the game"  # ResetBackend out; then a wait
    CHECKING = "checking the game"  # CheckHealth out
    CONNECTING = "connecting"  # Connect out
    WAITING = "waiting"  # a timer, then start, reset or check
    # On a socket (Phase.LINKED).
    REGISTERING = "registering"  # register out, registered awaited
    AVAILABLE = "available"  # registered, in the server's pool
    PLAYING = "playing"  # a session is on
    UNCONFIRMED = "unconfirmed"  # webrtc_failed said after connecting: shutdown awaited
    ACKING = "acking"  # shutdown in: closing the session, then shutdown_ack
    RESUMING = "resuming"  # a new socket after a drop: resume out, resumed awaited
    # The socket dropped mid-session (Phase.AWAY): the session runs on.
    AWAY = "away"  # the next resume attempt is due at a time
    DIALING = "dialing"  # a resume attempt's Connect is out
    # The end of a link, and of everything.
    LEAVING = "leaving"  # socket closed, the session's close awaited
    STOPPED = "stopped"

    @property
    def phase(self) -> Phase:
        return _PHASE[self]


_PHASE: Final = {
    State.STARTING: Phase.STARTING,
    State.RESETTING: Phase.RESETTING,
    State.CHECKING: Phase.CHECKING,
    State.CONNECTING: Phase.CONNECTING,
    State.WAITING: Phase.WAITING,
    State.REGISTERING: Phase.LINKED,
    State.AVAILABLE: Phase.LINKED,
    State.PLAYING: Phase.LINKED,
    State.UNCONFIRMED: Phase.LINKED,
    State.ACKING: Phase.LINKED,
    State.RESUMING: Phase.LINKED,
    State.AWAY: Phase.AWAY,
    State.DIALING: Phase.AWAY,
    State.LEAVING: Phase.LEAVING,
    State.STOPPED: Phase.STOPPED,
}

# The states in which the session lives on without a server to talk to:
# what it says waits in the resume's outbox.
AWAY_STATES: Final = frozenset({State.AWAY, State.DIALING, State.RESUMING})
# A session is in progress (LEAVING is only ever waited in for a session's
# close): a drain lets it finish.
SESSION_STATES: Final = AWAY_STATES | {
    State.PLAYING,
    State.UNCONFIRMED,
    State.ACKING,
    State.LEAVING,
}


class Course(enum.Enum):
    """Where the worker is headed, beside its state: serving one player after
    another, or (drained) finishing the session in progress and exiting where
    it would otherwise register again."""

    SERVE = "serve"
    DRAIN = "drain"


class Then(enum.Enum):
    """What a wait leads to."""

    START = "start"
    RESET = "reset"
    CHECK = "check"


class Plan(enum.Enum):
    """Why a link ended, which decides what comes next."""

    RESTART = "restart"  # the session (or registration) ended normally: short pause
    RECONNECT = "reconnect"  # the node is stopping, others live: at once, elsewhere
    LOST = "server lost"  # socket closed or heartbeats stopped: server backoff
    BACKEND_FAILED = "backend failed"  # the game is down: game backoff, reset


class Poll(enum.Enum):
    """The idle health poll, beside the link's state: started while available,
    its answer still counts if a session has started meanwhile."""

    IDLE = "idle"
    DUE = "due"  # at poll_at, while available
    RUNNING = "running"  # CheckHealth out


@dataclass(slots=True)
class Heartbeat:
    """The server's pings on one socket: silent past ``timeout``, the link
    looks once more (``SILENCE_GRACE``) before calling the server gone."""

    timeout: float
    last: float
    look_until: float | None = None  # the last look, once the timeout has passed

    def heard(self, now: float) -> None:
        self.last = now
        self.look_until = None

    @property
    def due(self) -> float:
        return self.look_until if self.look_until is not None else self.last + self.timeout

    def silent(self, now: float) -> bool:
        """At a timer: True once the server has been silent past the last look."""
        if now < self.last + self.timeout:
            return False
        if self.look_until is None:
            self.look_until = now + min(SILENCE_GRACE, self.timeout / 4)
            return False
        return now >= self.look_until


class Media(enum.Enum):
    """One session's own machine, as the server hears of it."""

    NEGOTIATING = "negotiating"  # offer out, nothing said of the outcome yet
    HANDSHAKE_FAILED = "handshake failed"  # webrtc_failed said: the server ends it
    CONNECTED = "connected"  # the peer connection connected (said once)
    CLOSING = "closing"  # CloseSession out
    CLOSED = "closed"  # SessionClosed in: ``outcome`` goes into shutdown_ack


@dataclass(slots=True)
class SessionRecord:
    """The link's one session, from session_start to the link's end."""

    id: str
    resume_token: str | None  # the current one; replaced by each resumed
    media: Media = Media.NEGOTIATING
    outcome: tuple[bool, str] | None = None

    @property
    def live(self) -> bool:
        """Not closing: its media's news still matters."""
        return self.media not in (Media.CLOSING, Media.CLOSED)


@dataclass(slots=True)
class Resume:
    """A dropped socket's resume: the grace, the attempts, and what the session
    says meanwhile (sent once resumed)."""

    since: float
    until: float
    attempts: int = 0
    attempt_at: float = 0.0  # in State.AWAY: when the next attempt dials
    outbox: list[t.Message] = field(default_factory=list)

    def schedule(self, now: float, quick: tuple[float, ...], backoff: Callable[[], float]) -> float:
        """When the next attempt dials: quick first, then the server backoff,
        never past the grace."""
        delay = quick[self.attempts] if self.attempts < len(quick) else backoff()
        self.attempt_at = min(now + delay, self.until)
        return self.attempt_at
