"""What one node tells another about a session they share.

A session's two members may sit on different nodes; each node keeps its own
copy of the session and the node of the partner. These messages keep the
copies in step, travel through the cluster (a Redis stream per node, each
entry also pushed to its node by pub/sub) in the
order they were told, and are applied by ``hub.on_bus``. The client's node
owns the session's deadlines (handshake, inactivity), so each fires once.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from playcast.protocol import FailureKind, IceServer, ShutdownReason


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
    """A handshake message for the local member ``to``; ``frame`` is its JSON."""

    to: str
    frame: str


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
    offer the worker again, or look for a worker again for the client."""

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


class Line(_Bus, tag="line"):
    """A game's waiting line changed: its clients, in order, and their nodes."""

    game: str
    clients: list[str]
    nodes: list[str]


class Snap(_Bus, tag="snap"):
    """For /api/status: push your snapshot onto the list ``reply``."""

    reply: str


BusMessage = Start | Assign | Relay | Connected | Up | End | Again | Take | Moved | Line | Snap
Role = Literal["worker", "client"]

_decoder: Final[msgspec.json.Decoder[BusMessage]] = msgspec.json.Decoder(BusMessage)
_many: Final[msgspec.json.Decoder[list[BusMessage]]] = msgspec.json.Decoder(list[BusMessage])
_encoder: Final = msgspec.json.Encoder()


def encode(msg: BusMessage) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | str) -> BusMessage:
    msg: BusMessage = _decoder.decode(data)
    return msg


def entry(msgs: list[BusMessage]) -> tuple[str, bytes]:
    """A stream entry's field and value for ``msgs`` (in order): ``m``, one
    message; ``b``, a JSON array of several, written at once (one entry, one
    push to the node and one wake-up of it)."""
    if len(msgs) == 1:
        return "m", _encoder.encode(msgs[0])
    return "b", _encoder.encode(msgs)


def unpack(fields: dict[bytes, bytes]) -> list[BusMessage]:
    """The messages of a stream entry, in order."""
    one = fields.get(b"m")
    if one is not None:
        return [decode(one)]
    many: list[BusMessage] = _many.decode(fields[b"b"])
    return many
