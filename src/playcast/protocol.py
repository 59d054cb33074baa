"""The wire contract (PROTOCOL.md v1) as typed messages: the one catalogue.

Every message is a msgspec Struct tagged by its ``type`` field, so one decoder
turns a frame into exactly one of them or fails with a precise reason. The
server, the worker, the test peers and docs/protocol.md all speak through these
definitions; nothing here knows about sockets or server state.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

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
ErrorCode = Literal[
    "bad_message", "not_registered", "unexpected_message", "unknown_game", "resume_failed"
]
RejectReason = Literal[
    "no_worker_available",
    "unknown_game",
    "unsupported_browser",
    "queue_timeout",
    "service_unavailable",
    "unauthorized",
]
# What went wrong when a peer reports webrtc_failed (optional, for the truth
# told to the player and the operator): "negotiation" (no media line both
# sides accept, an SDP the other side refused), "ice" (no network path),
# "media" (the game or the decoder failed), "unsupported" (no WebRTC at all),
# "internal" (a bug).
FailureKind = Literal["negotiation", "ice", "media", "unsupported", "internal"]
# Video codecs as WebRTC names them (RTCRtpCodec mimeType without "video/").
Codec = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9-]+$")]
CodecList = Annotated[list[Codec], msgspec.Meta(max_length=16)]
# A peer that names no codecs is taken to speak H.264 only (protocol v1).
DEFAULT_CODECS: Final = ("H264",)


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
    # For handshake_failed: the kind of failure reported, when known.
    detail: FailureKind | None = None


class ShutdownAck(_Msg, tag="shutdown_ack"):
    ok: bool
    detail: str


# --- worker -----------------------------------------------------------------


GameName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Id = Annotated[str, msgspec.Meta(max_length=64)]
# A worker's name, the same across its restarts (a phone's serial, a host
# and process): what an operator drains it by. Letters, digits and ._:@-.
WORKER_NAME_PATTERN: Final = r"^[A-Za-z0-9._:@-]+$"
WorkerName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=WORKER_NAME_PATTERN)]


class AudioInfo(msgspec.Struct, omit_defaults=True):
    """Whether a worker streams the game's sound: ``codec`` "opus", or None
    (video only) with ``detail`` saying why (old phone, capture refused,
    ``--no-audio``)."""

    codec: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    detail: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Register(_Msg, tag="register"):
    game: GameName
    addr: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    # What the worker can send, in its order of preference; None: H.264.
    codecs: CodecList | None = None
    # Optional (issue 11): sound or not, for /api/status.
    audio: AudioInfo | None = None
    # Optional (issue 26): a name that outlives its registrations.
    name: WorkerName | None = None


class Registered(_Msg, tag="registered"):
    worker_id: str
    heartbeat_interval: float
    heartbeat_timeout: float
    # Seconds a session waits for a member whose socket dropped (0: none).
    resume_grace: float | None = None


class SessionStart(_Msg, tag="session_start"):
    session_id: str
    client_id: str
    ice_servers: list[IceServer]
    # The codec pairing chose: the worker's first that the player can decode.
    codec: str | None = None
    # With --resume-grace: the secret that resumes this member's place.
    resume_token: str | None = None


# --- client -----------------------------------------------------------------


class Join(_Msg, tag="join"):
    game: GameName = DEFAULT_GAME
    # What the browser can decode; None: H.264.
    codecs: CodecList | None = None
    # With --join-secret: the site's signed join ticket (a JWT, issue 27).
    ticket: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class Assigned(_Msg, tag="assigned"):
    session_id: str
    client_id: str
    worker_id: str
    ice_servers: list[IceServer]
    codec: str | None = None
    resume_token: str | None = None
    resume_grace: float | None = None


class Rejected(_Msg, tag="rejected"):
    reason: RejectReason
    message: str
    # With unauthorized: what was wrong with the ticket (never the secret).
    detail: str | None = None


class Queued(_Msg, tag="queued"):
    """No worker is free: the client waits in line (opt-in, --queue-limit)."""

    position: int  # 1 is next
    game: str


class Input(_Msg, tag="input"):
    event: dict[str, Any]


class InactivityWarning(_Msg, tag="inactivity_warning"):
    seconds_left: float


class Leave(_Msg, tag="leave"):
    pass


# --- resuming a session over a new socket (--resume-grace) -------------------


class Resume(_Msg, tag="resume"):
    """A member's first message on a new socket, instead of register/join."""

    session_id: Id
    token: Annotated[str, msgspec.Meta(max_length=128)]


class Resumed(_Msg, tag="resumed"):
    session_id: str
    resume_token: str  # the old one is spent


class Reconnect(_Msg, tag="reconnect"):
    """This node is stopping while others live: resume elsewhere, now."""


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
    kind: FailureKind | None = None


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
    | Queued
    | Input
    | InactivityWarning
    | Leave
    | Resume
    | Resumed
    | Reconnect
    | Offer
    | Answer
    | IceCandidate
    | WebrtcConnected
    | WebrtcFailed
)
HandshakeMessage = Offer | Answer | IceCandidate | WebrtcConnected | WebrtcFailed

_decoder: Final[msgspec.json.Decoder[Message]] = msgspec.json.Decoder(Message)
_encoder: Final = msgspec.json.Encoder()


class BadMessage(ValueError):
    """A frame that is not a valid protocol message; ``str()`` says why."""


def decode(frame: str | bytes) -> Message:
    try:
        msg: Message = _decoder.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise BadMessage(str(exc)) from None
    return msg


def message_type(msg: Message) -> str:
    """A message's ``type`` on the wire."""
    tag: str = type(msg).__struct_config__.tag  # type: ignore[assignment]
    return tag


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def encode_str(msg: Message) -> str:
    return _encoder.encode(msg).decode()
