"""The wire contract (PROTOCOL.md v1) as typed messages, and the server's records.

Every message is a msgspec Struct tagged by its ``type`` field, so one decoder
turns a frame into exactly one of them or fails with a precise reason. Workers,
the test peer and the server all speak through these definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Protocol, cast

import msgspec

DEFAULT_GAME: Final = "com.supercell.clashroyale"
MAX_FRAME_BYTES: Final = 64 * 1024

ShutdownReason = Literal[
    "inactivity_timeout",
    "heartbeat_timeout",
    "worker_failed",
    "client_failed",
    "client_left",
    "handshake_failed",
    "handshake_timeout",
    "server_shutdown",
]
ErrorCode = Literal["bad_message", "not_registered", "unexpected_message"]
# "registering" until the first register message; the seed's two states after.
WorkerStatus = Literal["registering", "available", "busy"]
ConnectionState = Literal["waiting", "connecting", "connected"]
Role = Literal["worker", "client"]


class _Msg(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every message: JSON object with a string ``type``."""


class IceServer(msgspec.Struct, omit_defaults=True):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Candidate(msgspec.Struct, omit_defaults=True):
    candidate: str
    sdp_mid: str | None = msgspec.field(default=None, name="sdpMid")
    sdp_mline_index: int | None = msgspec.field(default=None, name="sdpMLineIndex")


# --- both directions --------------------------------------------------------


class Ping(_Msg, tag="ping"):
    ts: float


class Pong(_Msg, tag="pong"):
    ts: float


class Error(_Msg, tag="error"):
    code: ErrorCode
    message: str


class Shutdown(_Msg, tag="shutdown"):
    reason: ShutdownReason
    message: str


class ShutdownAck(_Msg, tag="shutdown_ack"):
    ok: bool
    detail: str


# --- worker -----------------------------------------------------------------


GameName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Id = Annotated[str, msgspec.Meta(max_length=64)]


class Register(_Msg, tag="register"):
    game: GameName
    addr: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None


class Registered(_Msg, tag="registered"):
    worker_id: str
    heartbeat_interval: float
    heartbeat_timeout: float


class SessionStart(_Msg, tag="session_start"):
    session_id: str
    client_id: str
    ice_servers: list[IceServer]


# --- client -----------------------------------------------------------------


class Join(_Msg, tag="join"):
    game: GameName = DEFAULT_GAME


class Assigned(_Msg, tag="assigned"):
    session_id: str
    client_id: str
    worker_id: str
    ice_servers: list[IceServer]


class Rejected(_Msg, tag="rejected"):
    reason: Literal["no_worker_available"]
    message: str


class Input(_Msg, tag="input"):
    event: dict[str, Any]


class InactivityWarning(_Msg, tag="inactivity_warning"):
    seconds_left: float


class Leave(_Msg, tag="leave"):
    pass


# --- handshake (relayed inside one session) ---------------------------------


class Offer(_Msg, tag="offer"):
    session_id: Id
    sdp: str


class Answer(_Msg, tag="answer"):
    session_id: Id
    sdp: str


class IceCandidate(_Msg, tag="ice_candidate"):
    session_id: Id
    candidate: Candidate | None


class WebrtcConnected(_Msg, tag="webrtc_connected"):
    session_id: Id


class WebrtcFailed(_Msg, tag="webrtc_failed"):
    session_id: Id
    reason: str


Message = (
    Ping
    | Pong
    | Error
    | Shutdown
    | ShutdownAck
    | Register
    | Registered
    | SessionStart
    | Join
    | Assigned
    | Rejected
    | Input
    | InactivityWarning
    | Leave
    | Offer
    | Answer
    | IceCandidate
    | WebrtcConnected
    | WebrtcFailed
)
HandshakeMessage = Offer | Answer | IceCandidate | WebrtcConnected | WebrtcFailed

_decoder: Final = msgspec.json.Decoder(Message)
_encoder: Final = msgspec.json.Encoder()


class BadMessage(ValueError):
    """A frame that is not a valid protocol message; ``str()`` says why."""


def decode(frame: str | bytes) -> Message:
    try:
        return cast(Message, _decoder.decode(frame))
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise BadMessage(str(exc)) from None


def message_type(msg: Message) -> str:
    """A message's ``type`` on the wire."""
    tag: str = type(msg).__struct_config__.tag  # type: ignore[assignment]
    return tag


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def encode_str(msg: Message) -> str:
    return _encoder.encode(msg).decode()


# --- server records ---------------------------------------------------------


class Connection(Protocol):
    """What the protocol core needs from a socket; the I/O layer implements it.

    Both calls return at once: sends are queued, and ``close`` flushes what is
    queued before closing, so the core never waits on a peer.
    """

    @property
    def remote(self) -> tuple[str, int]:
        """The socket's peer address and port."""
        ...

    def send(self, msg: Message) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class RateLimit:
    """Token bucket: ``rate`` tokens a second, at most ``burst`` saved."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, *, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True, eq=False)
class Peer:
    """Fields common to both roles (one record per WebSocket)."""

    id: str
    ws: Connection
    last_ping: float
    opened_at: float
    messages: RateLimit
    errors: RateLimit
    slot: int = 0
    # Set once the server has asked this peer to shut down: only pong and
    # shutdown_ack are expected after it, and the socket closes at the deadline.
    closing_deadline: float | None = None
    shutdown_reason: ShutdownReason | None = None


@dataclass(slots=True, eq=False)
class Worker(Peer):
    addr: str = ""
    port: int = 0
    status: WorkerStatus = "registering"
    client_id: str | None = None
    game: str = ""
    session_id: str | None = None

    role: Role = "worker"


@dataclass(slots=True, eq=False)
class Client(Peer):
    worker_id: str | None = None
    game: str = DEFAULT_GAME
    connection_state: ConnectionState = "waiting"
    joined: bool = False
    session_id: str | None = None
    last_input: float = 0.0
    warned: bool = False

    role: Role = "client"


SessionPhase = Literal["awaiting_offer", "awaiting_answer", "negotiating", "connected"]


@dataclass(slots=True, eq=False)
class Session:
    id: str
    worker_id: str
    client_id: str
    game: str
    started_at: float
    phase: SessionPhase = "awaiting_offer"
    worker_connected: bool = False
    client_connected: bool = False
    worker_candidates: int = 0
    client_candidates: int = 0


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    inactivity_timeout: float = 120.0
    inactivity_warning: float = 20.0
    handshake_timeout: float = 20.0
    shutdown_ack_timeout: float = 5.0
    # Empty: host candidates are enough on a LAN or loopback; internet
    # deployments pass --ice-server (STUN/TURN), see docs/deploy.md.
    ice_servers: tuple[IceServer, ...] = ()
    # Flood limits: far above any honest peer (a browser coalesces input to a
    # few messages a second), far below what would hurt other sessions.
    max_message_rate: float = 100.0
    max_message_burst: float = 400.0
    max_error_rate: float = 5.0
    max_error_burst: float = 50.0
    # A peer whose unsent messages pass this many bytes is not reading: it is
    # closed rather than allowed to grow the server's memory.
    max_send_queue_bytes: int = 1 << 20
    # TURN REST: per-session credentials from a secret shared with coturn.
    turn_secret: str | None = None
    turn_urls: tuple[str, ...] = ()
    turn_ttl: float = 6 * 3600.0
    # Workers must present this (Authorization: Bearer) to connect; None: open.
    worker_token: str | None = None
