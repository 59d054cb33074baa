"""What goes in and out of the link core (``worker/link.py``): the events it
is fed (what happened) and the effects it asks for (what to do).

Plain records with no behaviour: the asyncio layer (``worker/runner.py``)
turns the effects into I/O and the I/O's outcome into events; the session
(``worker/session.py``) posts the media's events.
"""

from __future__ import annotations

from dataclasses import dataclass

from playcast import protocol as t

# --- events: what happened -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    msg: t.Message


@dataclass(frozen=True, slots=True)
class SocketClosed:
    why: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The WebSocket to the server is open."""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    why: str


@dataclass(frozen=True, slots=True)
class BackendStarted:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendReset:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthChecked:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendFailed:
    """The backend pushed a failure: its game is down."""

    detail: str


@dataclass(frozen=True, slots=True)
class OfferReady:
    session_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class MediaConnected:
    session_id: str


@dataclass(frozen=True, slots=True)
class MediaFailed:
    """The session's media died: the handshake, the player's side, or the game."""

    session_id: str
    reason: str
    backend: bool  # the game's fault, not the player's
    # What kind of failure, for the truth told to the player and the operator.
    kind: t.FailureKind | None = None


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """``CloseSession`` is done; ``ok``/``detail`` go into ``shutdown_ack``."""

    session_id: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    pass


@dataclass(frozen=True, slots=True)
class DrainRequested:
    """Serve no more players: finish the session in progress, then exit."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


Event = (
    Received
    | SocketClosed
    | Connected
    | ConnectFailed
    | BackendStarted
    | BackendReset
    | HealthChecked
    | BackendFailed
    | OfferReady
    | MediaConnected
    | MediaFailed
    | SessionClosed
    | StopRequested
    | DrainRequested
    | TimerFired
)


# --- effects: what to do ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    msg: t.Message


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the WebSocket; answer with ``Connected`` or ``ConnectFailed``."""


@dataclass(frozen=True, slots=True)
class CloseSocket:
    pass


@dataclass(frozen=True, slots=True)
class StartBackend:
    """``backend.start()``; answer with ``BackendStarted``."""


@dataclass(frozen=True, slots=True)
class ResetBackend:
    """``backend.reset()``; answer with ``BackendReset``."""


@dataclass(frozen=True, slots=True)
class CheckHealth:
    """``backend.health()``; answer with ``HealthChecked``."""


@dataclass(frozen=True, slots=True)
class StartSession:
    start: t.SessionStart


@dataclass(frozen=True, slots=True)
class FeedSession:
    msg: t.Answer | t.IceCandidate


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close the peer connection; answer with ``SessionClosed``."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Exit:
    """Stop everything: close any session and the socket, ``backend.stop()``."""


Effect = (
    Send
    | Connect
    | CloseSocket
    | StartBackend
    | ResetBackend
    | CheckHealth
    | StartSession
    | FeedSession
    | CloseSession
    | Exit
)
