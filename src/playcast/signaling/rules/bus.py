"""What one node tells another about a session they share.

A session's two members may sit on different nodes; each node keeps its own
copy of the session and the node of the partner. These messages keep the
copies in step, travel through the cluster (pushed to the node by Redis
pub/sub, numbered so that none is lost: ``busorder.py``) in the order they
were told, and are applied by ``hub.on_bus``. The client's node
owns the session's deadlines (handshake, inactivity), so each fires once.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from playcast.protocol import (
    Answer,
    FailureKind,
    IceServer,
    Message,
    Offer,
    ShutdownReason,
    encode_str,
)


class _Bus(msgspec.Struct, tag_field="op", omit_defaults=True, kw_only=True):
    session_id: str = ""


class Start(_Bus, tag="start"):
    """To the worker's node: the worker was paired with ``client_id``."""

    worker_id: str
    client_id: str
    client_node: str
    codec: str
    ice_servers: list[IceServer]
    resume_token: str = ""  # the worker's, when resume is on


class Assign(_Bus, tag="assign"):
    """To the client's node: its client was paired with ``worker_id`` (a
    worker that became available found the client waiting in line)."""

    worker_id: str
    worker_node: str
    client_id: str
    codec: str
    ice_servers: list[IceServer]
    resume_token: str = ""  # the client's, when resume is on


class Relay(_Bus, tag="relay"):
    """A handshake message for the local member ``to``; ``frame`` is its JSON,
    passed on as it is; ``kind``: ``offer`` or ``answer`` (each moves the
    session's phase), else empty."""

    to: str
    frame: str
    kind: str = ""


class Connected(_Bus, tag="connected"):
    """To the owner: the worker reported webrtc_connected."""


class Up(_Bus, tag="up"):
    """To the worker's node: both sides are connected, the handshake is over."""


class End(_Bus, tag="end"):
    """The session is over: shut your member down with ``reason``."""

    reason: ShutdownReason
    detail: FailureKind | None = None


class Again(_Bus, tag="again"):
    """A pairing fell through (the partner vanished before it was told):
    offer the worker again, or look for a worker again for the client. With
    a ``session_id``: the session's record, if the member never heard of it,
    is ended too."""

    member: str


class Take(_Bus, tag="take"):
    """To the node a member was on: it resumed on ``node``; hand over what
    was held for it, and let go of it."""

    role: str
    node: str


class Moved(_Bus, tag="moved"):
    """To its partner's node: the member resumed on ``node``."""

    role: str
    node: str


class Restart(_Bus, tag="restart"):
    """An operator restarts ``member``, a worker of yours (``rules/admin.py``)."""

    member: str


class Line(_Bus, tag="line"):
    """A game's waiting line changed: its clients, in order, and their nodes."""

    game: str
    clients: list[str]
    nodes: list[str]


class Snap(_Bus, tag="snap"):
    """For /api/status: push your snapshot onto the list ``reply``."""

    reply: str


class Resend(_Bus, tag="resend"):
    """Send me again what you sent me after ``after`` under ``epoch``
    (``busorder``: I missed some of it)."""

    after: int
    epoch: str


class Lost(_Bus, tag="lost"):
    """What I sent you up to ``upto`` is no longer kept: do not wait for it."""

    upto: int


class Upto(_Bus, tag="upto"):
    """After what a ``Resend`` asked for: I have sent you up to ``last``."""

    last: int


BusMessage = (
    Start
    | Assign
    | Relay
    | Connected
    | Up
    | End
    | Again
    | Take
    | Moved
    | Restart
    | Line
    | Snap
    | Resend
    | Lost
    | Upto
)
# Handled by the cluster layer itself (a control entry, never numbered).
Control = Snap | Resend | Lost | Upto
Role = Literal["worker", "client"]

_decoder: Final[msgspec.json.Decoder[BusMessage]] = msgspec.json.Decoder(BusMessage)
_many: Final[msgspec.json.Decoder[list[BusMessage]]] = msgspec.json.Decoder(list[BusMessage])
_encoder: Final = msgspec.json.Encoder()


def relay(session_id: str, to: str, msg: Message) -> Relay:
    """``msg`` for the member ``to`` on another node."""
    kind = "offer" if isinstance(msg, Offer) else "answer" if isinstance(msg, Answer) else ""
    return Relay(session_id=session_id, to=to, frame=encode_str(msg), kind=kind)


def encode(msg: BusMessage) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | str) -> BusMessage:
    msg: BusMessage = _decoder.decode(data)
    return msg


def pack(msgs: list[BusMessage]) -> bytes:
    """An entry's body for ``msgs`` (in order): ``m`` and one message, or
    ``b`` and a JSON array of several, sent at once (one push to the node
    and one wake-up of it)."""
    if len(msgs) == 1:
        return b"m" + _encoder.encode(msgs[0])
    return b"b" + _encoder.encode(msgs)


def unpack(body: bytes) -> list[BusMessage]:
    """The messages of an entry's body, in order."""
    if body[:1] == b"m":
        return [decode(body[1:])]
    if body[:1] != b"b":
        raise ValueError("not a bus entry body")
    many: list[BusMessage] = _many.decode(body[1:])
    return many
