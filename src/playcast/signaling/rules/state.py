"""What the rules hold, each collection with one owner, and the ``Core`` they see.

Each owner keeps its collections to itself and changes them only through its
methods; what it shows is a read-only view (``MappingProxyType``: a reader
cannot change it, and reads cost what a dict's do on the hot paths). A rule
is handed the ``Core``: the owners, the clock and the settings, the counters,
and the effect sink (a send, a close, a shared-state request, a word to
another node), which the hub implements and the I/O layer drains after each
step (the ``websockets`` sans-I/O model: no rule ever calls out).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from playcast.signaling.types import Client, Peer, Session, Worker

if TYPE_CHECKING:
    from playcast.protocol import Message
    from playcast.signaling.rules.bus import BusMessage, Start
    from playcast.signaling.rules.counters import Counters
    from playcast.signaling.rules.settings import Settings
    from playcast.signaling.rules.tickets import TicketCheck
    from playcast.signaling.shared.records import Op

# Heartbeat work is spread over this many ticks per interval: each tick pings
# and checks one slot, so pings never go out in one burst.
SLOTS = 10


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class Roster:
    """The live peers of this node, by role, and their heartbeat slots."""

    __slots__ = ("_clients", "_cursor", "_slots", "_workers", "clients", "slots", "workers")

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}
        self._clients: dict[str, Client] = {}
        self.workers: Mapping[str, Worker] = MappingProxyType(self._workers)
        self.clients: Mapping[str, Client] = MappingProxyType(self._clients)
        self._slots: list[dict[str, Peer]] = [{} for _ in range(SLOTS)]
        self.slots: tuple[Mapping[str, Peer], ...] = tuple(MappingProxyType(s) for s in self._slots)
        self._cursor = 0

    def add(self, peer: Worker | Client) -> None:
        """A new socket's record: live, in the slot the sweep runs next (its
        first ping within a tick)."""
        peer.slot = self._cursor
        self._slots[peer.slot][peer.id] = peer
        self._live(peer)

    def _live(self, peer: Worker | Client) -> None:
        peer.live = True
        if isinstance(peer, Worker):
            self._workers[peer.id] = peer
        else:
            self._clients[peer.id] = peer

    def unlist(self, peer: Peer) -> bool:
        """Out of its heartbeat slot and its role's live set (only this very
        record: after a resume its id may name a newer one). True if it was live."""
        self._slots[peer.slot].pop(peer.id, None)
        live: dict[str, Worker] | dict[str, Client] = (
            self._workers if isinstance(peer, Worker) else self._clients
        )
        if live.get(peer.id) is peer:
            del live[peer.id]
            peer.live = False
            return True
        return False

    def unslot(self, peer: Peer) -> None:
        """Out of its heartbeat slot only (an away member, sent elsewhere)."""
        self._slots[peer.slot].pop(peer.id, None)

    def take_id(self, peer: Worker | Client, member_id: str) -> None:
        """A fresh socket's record becomes the member ``member_id`` (a resume):
        every reference to the member (the session, the partner, other
        nodes) stays true. It keeps its slot."""
        self.unlist(peer)
        peer.id = member_id
        self._slots[peer.slot][peer.id] = peer
        self._live(peer)

    def is_live(self, peer: Peer) -> bool:
        """In the live set itself (``peer.live`` says the same, cheaper)."""
        if isinstance(peer, Worker):
            return self._workers.get(peer.id) is peer
        return self._clients.get(peer.id) is peer

    def turn(self) -> Mapping[str, Peer]:
        """The slot whose turn it is (the cursor moves on to the next)."""
        slot = self.slots[self._cursor]
        self._cursor = (self._cursor + 1) % SLOTS
        return slot

    def clear(self) -> list[Worker | Client]:
        """Everyone out (the node sends them all elsewhere); who they were."""
        peers: list[Worker | Client] = [*self._workers.values(), *self._clients.values()]
        for peer in peers:
            self._slots[peer.slot].pop(peer.id, None)
            peer.live = False
        self._workers.clear()
        self._clients.clear()
        return peers


class SessionTable:
    """This node's copies of sessions; those whose handshake deadline this
    node runs (the owner's); those waiting for an away member to resume, and
    the away members themselves."""

    __slots__ = (
        "_away", "_handshaking", "_sessions", "_waiting",
        "away", "handshaking", "sessions", "waiting",
    )  # fmt: skip

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._handshaking: dict[str, Session] = {}
        self._waiting: dict[str, Session] = {}
        self._away: dict[str, Worker | Client] = {}
        self.sessions: Mapping[str, Session] = MappingProxyType(self._sessions)
        self.handshaking: Mapping[str, Session] = MappingProxyType(self._handshaking)
        self.waiting: Mapping[str, Session] = MappingProxyType(self._waiting)
        self.away: Mapping[str, Worker | Client] = MappingProxyType(self._away)

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

    def drop(self, session_id: str) -> bool:
        """Out of every collection; True if it was waiting for a member."""
        self._sessions.pop(session_id, None)
        self._handshaking.pop(session_id, None)
        return self._waiting.pop(session_id, None) is not None

    def run_deadline(self, session: Session, on: bool) -> None:
        """Whether this node runs ``session``'s handshake deadline."""
        if on:
            self._handshaking[session.id] = session
        else:
            self._handshaking.pop(session.id, None)

    def wait(self, session: Session, on: bool) -> None:
        """Whether ``session`` waits for an away member."""
        if on:
            self._waiting[session.id] = session
        else:
            self._waiting.pop(session.id, None)

    def step_away(self, member: Worker | Client) -> None:
        self._away[member.id] = member

    def come_back(self, member_id: str) -> Worker | Client | None:
        """The away member ``member_id`` is back, or will not be (None if it
        was not away)."""
        return self._away.pop(member_id, None)


class Line:
    """The clients of this node waiting in a game's line, by id."""

    __slots__ = ("_clients", "clients")

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        self.clients: Mapping[str, Client] = MappingProxyType(self._clients)

    def join(self, client: Client) -> None:
        self._clients[client.id] = client

    def leave(self, client_id: str) -> None:
        self._clients.pop(client_id, None)

    def clear(self) -> None:
        self._clients.clear()


class Closings:
    """Peers told to shut down and not yet closed, by id."""

    __slots__ = ("_peers", "peers")

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        self.peers: Mapping[str, Peer] = MappingProxyType(self._peers)

    def add(self, peer: Peer) -> None:
        self._peers[peer.id] = peer

    def release(self, peer: Peer) -> bool:
        """Done waiting for ``peer``'s ack; True if it was being waited for."""
        return self._peers.pop(peer.id, None) is not None


class Nodes:
    """This node's view of the others: which it found dead, and whether it is
    cut off from the shared state itself (no new sessions, no registrations)."""

    __slots__ = ("_gone", "isolated")

    def __init__(self) -> None:
        self._gone: set[str] = set()
        self.isolated = False

    def is_gone(self, node: str) -> bool:
        return node in self._gone

    @property
    def gone(self) -> frozenset[str]:
        return frozenset(self._gone)

    def went(self, node: str) -> bool:
        """``node`` is dead: True if it was not known so already."""
        if node in self._gone:
            return False
        self._gone.add(node)
        return True

    def back(self, node: str) -> bool:
        """``node`` lives again (a new process under its id): True if it had gone."""
        if node not in self._gone:
            return False
        self._gone.discard(node)
        return True

    def forget_gone(self, keep: set[str]) -> None:
        """Forget the dead nodes not in ``keep`` (nothing names them any more)."""
        self._gone &= keep

    def isolate(self, on: bool) -> bool:
        """Cut off (or back); True if that changed."""
        if self.isolated == on:
            return False
        self.isolated = on
        return True


class Pending:
    """What waits for the shared state's answer here: a pairing's start for
    a worker whose listing was not read yet (it is greeted once told
    ``registered``), and fresh sockets whose resume is being checked (by the
    new token's digest: the socket's record and the new token)."""

    __slots__ = ("_resumes", "_starts", "resumes", "starts")

    def __init__(self) -> None:
        self._starts: dict[str, Start] = {}
        self._resumes: dict[str, tuple[Peer, str]] = {}
        self.starts: Mapping[str, Start] = MappingProxyType(self._starts)
        self.resumes: Mapping[str, tuple[Peer, str]] = MappingProxyType(self._resumes)

    def hold_start(self, worker_id: str, start: Start) -> None:
        self._starts[worker_id] = start

    def take_start(self, worker_id: str) -> Start | None:
        return self._starts.pop(worker_id, None)

    def add_resume(self, fresh: str, peer: Peer, raw: str) -> None:
        self._resumes[fresh] = (peer, raw)

    def take_resume(self, fresh: str) -> tuple[Peer, str] | None:
        return self._resumes.pop(fresh, None)


class Core(Protocol):
    """What a rule may touch: the owners, time, settings and counters, and
    the effect sink. The hub is the one implementation."""

    settings: Settings
    node: str
    games: frozenset[str]
    counters: Counters
    clock: Callable[[], float]
    # Only for what is shared with other nodes or expires at a real time.
    wall_clock: Callable[[], float]
    new_id: Callable[[str], str]
    # With --join-secret: the check every join's ticket passes (None: open).
    tickets: TicketCheck | None
    roster: Roster
    table: SessionTable
    line: Line
    closings: Closings
    nodes: Nodes
    pending: Pending

    @property
    def stopping(self) -> bool: ...

    def send(self, peer: Peer, msg: Message) -> None:
        """Write ``msg`` to ``peer``'s socket."""

    def send_encoded(self, peer: Peer, data: bytes) -> None:
        """Write a message already encoded (a relayed frame, passed on as it came)."""

    def close(self, peer: Peer, code: int, reason: str) -> None:
        """Close ``peer``'s socket."""

    def request(self, op: Op) -> None:
        """Ask the shared state for ``op``; its outcome comes back as a step."""

    def tell(self, node: str, msg: BusMessage) -> None:
        """Say ``msg`` to another node."""
