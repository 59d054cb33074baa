"""What the protocol core holds: the records, the clock, and the effects it owes.

The core never touches a socket. A rule changes this state and appends its
effects (send ``msg`` to a peer, close a peer's socket) to ``effects``; the
socket layer takes them after each step (``take_effects``) and carries them
out, in order. A slow consumer found while writing is fed back as the next
step, never run in the middle of one (the ``websockets`` sans-I/O model).

What the nodes of a cluster share is asked for the same way: an operation
on the shared state (``requests``) whose outcome comes back as a step, and a
message for another node (``tells``). A lone server keeps the shared state
in memory (``memory``) and settles its requests at the end of each step.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from playcast.protocol import Message
from playcast.signaling.rules.bus import BusMessage, Start
from playcast.signaling.rules.counters import Metrics, Readings
from playcast.signaling.rules.settings import Settings
from playcast.signaling.shared import MemoryShared, Op, WorkerEntry
from playcast.signaling.types import Client, Peer, Session, Worker

# Heartbeat work is spread over this many ticks per interval: each tick pings
# and checks one slot, so pings never go out in one burst.
SLOTS = 10

# (peer, message, 0, "") is a send; (peer, None, code, reason) a close.
Effect = tuple[Peer, Message | bytes | None, int, str]


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class State:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        id_factory: Callable[[str], str] = new_id,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock  # only for credentials that expire at a real time
        self.metrics = metrics or Metrics()
        self.metrics.attach(self.readings)
        self.new_id = id_factory
        self.node = settings.node_id or id_factory("n")
        self.games = frozenset(settings.games)
        # A lone server's shared state; None in a cluster (Redis holds it).
        self.memory: MemoryShared | None = (
            MemoryShared(settings.games) if settings.redis is None else None
        )
        self.workers: dict[str, Worker] = {}
        self.clients: dict[str, Client] = {}
        self.sessions: dict[str, Session] = {}
        # Clients waiting in line on this node, by id.
        self.waiting: dict[str, Client] = {}
        # Cut off from the shared state: no new sessions, no registrations.
        self.isolated = False
        # Nodes known dead: nothing more is told to them.
        self.gone_nodes: set[str] = set()
        # A pairing's word for a worker here whose listing was not read yet,
        # by worker: it is greeted once told ``registered`` (pairing.start_worker).
        self.held_starts: dict[str, Start] = {}
        # Resume: members whose socket dropped mid-session (by id), and the
        # sessions waiting for one (by id), until their grace runs out.
        self.away: dict[str, Worker | Client] = {}
        self.waiting_for: dict[str, Session] = {}
        # Fresh sockets whose resume the shared state is checking, by the
        # new token's digest: (the socket's record, the new token).
        self.resuming: dict[str, tuple[Peer, str]] = {}
        # Peers told to shut down and not yet closed, by id.
        self.closing: dict[str, Peer] = {}
        self.handshaking: dict[str, Session] = {}
        self.slots: list[dict[str, Peer]] = [{} for _ in range(SLOTS)]
        self.cursor = 0
        self.stopping = False
        self.effects: list[Effect] = []
        self.requests: list[Op] = []
        self.tells: list[tuple[str, BusMessage]] = []

    # --- effects ---------------------------------------------------------

    def send(self, peer: Peer, msg: Message) -> None:
        self.effects.append((peer, msg, 0, ""))

    def send_encoded(self, peer: Peer, data: bytes) -> None:
        """A message already encoded (a relayed frame, passed on as it came)."""
        self.effects.append((peer, data, 0, ""))

    def close(self, peer: Peer, code: int, reason: str) -> None:
        self.effects.append((peer, None, code, reason))

    def request(self, op: Op) -> None:
        self.requests.append(op)

    def tell(self, node: str, msg: BusMessage) -> None:
        self.tells.append((node, msg))

    def take_effects(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def take_requests(self) -> list[Op]:
        requests, self.requests = self.requests, []
        return requests

    def take_tells(self) -> list[tuple[str, BusMessage]]:
        tells, self.tells = self.tells, []
        return tells

    # --- queries ---------------------------------------------------------

    @property
    def available(self) -> dict[str, dict[str, WorkerEntry]]:
        """A lone server's pools: game -> available workers, longest-waiting first."""
        if self.memory is None:
            return {}
        return {name: game.pool for name, game in self.memory.games.items()}

    @property
    def drained(self) -> bool:
        """Stopping, and every peer told so has acked or been closed."""
        return self.stopping and not self.closing

    def unlist(self, peer: Peer) -> bool:
        """Out of its heartbeat slot and its role's live set (only this very
        record: after a resume its id may name a newer one). True if it was live."""
        self.slots[peer.slot].pop(peer.id, None)
        live = self.workers if isinstance(peer, Worker) else self.clients
        if live.get(peer.id) is peer:
            del live[peer.id]
            return True
        return False

    def let_go(self, session: Session) -> None:
        """This node's copy of a session is done here, without ending it
        (its members are elsewhere now)."""
        self.sessions.pop(session.id, None)
        self.handshaking.pop(session.id, None)
        self.waiting_for.pop(session.id, None)

    def is_live(self, peer: Peer) -> bool:
        if isinstance(peer, Worker):
            return self.workers.get(peer.id) is peer
        return self.clients.get(peer.id) is peer

    def readings(self) -> Readings:
        """What the scrape-time gauges show: read, never kept in step by hand."""
        workers: dict[tuple[str, str], int] = {}
        for w in self.workers.values():
            key = (w.status, w.game)
            workers[key] = workers.get(key, 0) + 1
        phases: dict[str, int] = {}
        for s in self.sessions.values():
            phases[s.phase] = phases.get(s.phase, 0) + 1
        return Readings(
            connections={
                "worker": len(self.workers),
                "client": len(self.clients),
                "closing": len(self.closing),
                "waiting": len(self.waiting),
            },
            workers=workers,
            sessions=phases,
        )


def said_hello(peer: Peer) -> bool:
    """Past its first message: registered, joined, or resumed."""
    if isinstance(peer, Worker):
        return peer.status != "registering"
    return isinstance(peer, Client) and peer.joined


def role(peer: Peer) -> str:
    return "worker" if isinstance(peer, Worker) else "client"


def ids(peer: Peer) -> dict[str, str | None]:
    """The ids a log line about ``peer`` carries."""
    if isinstance(peer, Worker):
        return {"worker": peer.id, "client": peer.client_id, "session": peer.session_id}
    if isinstance(peer, Client):
        return {"client": peer.id, "worker": peer.worker_id, "session": peer.session_id}
    return {"peer": peer.id}


def fmt_remote(peer: Peer) -> str:
    host, port = peer.ws.remote
    return f"{host}:{port}"
