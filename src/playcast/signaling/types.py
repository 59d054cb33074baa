"""The signaling server's records: the seed's worker and client structs, the
session between them, and what the core needs of a socket.

The wire messages live in ``playcast.protocol``; the settings in
``playcast.signaling.rules.settings``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from playcast.protocol import DEFAULT_GAME, Message, ShutdownReason

# "registering" until the first register message; the seed's two states after,
# and "held": registered but out of the pool, its name drained by an operator.
WorkerStatus = Literal["registering", "available", "busy", "held"]
ConnectionState = Literal["waiting", "connecting", "connected"]
Role = Literal["worker", "client"]


class Connection(Protocol):
    """What the core knows of a socket: only where it comes from.

    The core never writes: its sends and closes are effects that the socket
    layer carries out (``Hub.flush``), through its own connection type.
    """

    @property
    def remote(self) -> tuple[str, int]:
        """The socket's peer address and port."""
        ...


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
    # In its role's live set (``rules.state.Roster`` keeps it true): this very
    # record, not another under its id (a resume's fresh socket takes the id).
    live: bool = False
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
    codecs: tuple[str, ...] = ()
    registered: bool = False  # told "registered" (once listed in the shared pool)
    name: str = ""  # what it calls itself across restarts ("": it sent none)
    # What the worker said of its sound: {"codec": "opus" | None, "detail": ...}.
    audio: dict[str, str | None] | None = None

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
    codecs: tuple[str, ...] = ()
    # In the waiting line (--queue-limit): since when, and the position it
    # was last told; 0 when not waiting.
    queued_at: float = 0.0
    position: int = 0
    # Its join ticket's ``sub`` (--join-secret): who the site says it is.
    sub: str = ""

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
    codec: str | None = None
    # Where each member's socket is (a node id); this node's copy of a session
    # whose partner is elsewhere. The owner (the client's node) runs the
    # session's deadlines, so each fires once in a cluster.
    worker_node: str = ""
    client_node: str = ""
    owner: bool = True
    client_sub: str = ""  # the player's ticket ``sub``, on the node that holds it
    # Resume (--resume-grace): each member's token, hashed; when a member's
    # socket is gone, until when it may come back (0: attached), and what its
    # partner sent meanwhile (bounded: RESUME_BUFFER messages).
    worker_token: bytes = b""
    client_token: bytes = b""
    worker_away_until: float = 0.0
    client_away_until: float = 0.0
    held: dict[str, deque[Message]] | None = None


def said_hello(peer: Peer) -> bool:
    """Past its first message: registered, joined, or resumed."""
    if isinstance(peer, Worker):
        return peer.status != "registering"
    return isinstance(peer, Client) and peer.joined


def role(peer: Peer) -> Role:
    return "worker" if isinstance(peer, Worker) else "client"


def ids(peer: Peer) -> dict[str, str | None]:
    """The ids a log line about ``peer`` carries."""
    if isinstance(peer, Worker):
        return {
            "worker": peer.id,
            "client": peer.client_id,
            "session": peer.session_id,
            "name": peer.name or None,
        }
    if isinstance(peer, Client):
        return {"client": peer.id, "worker": peer.worker_id, "session": peer.session_id}
    return {"peer": peer.id}


def fmt_remote(peer: Peer) -> str:
    host, port = peer.ws.remote
    return f"{host}:{port}" if port else host  # (port 0: an address a proxy named)
