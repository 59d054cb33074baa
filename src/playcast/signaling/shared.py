"""What the nodes of a cluster share: the worker directory, each game's pool
of available workers and waiting line, and the session records.

The core never calls this: it asks for an operation (an effect, ``Publish``,
``Pair``, ...) and is fed the ``Outcome`` as a step of its own. Two
implementations keep the same rules: ``MemoryShared`` here, in process (a
lone server, and the unit tests, where several nodes share one under a fake
clock), and ``RedisShared`` (``redis_shared.py``), where every operation is
one atomic script. ``tests/test_shared_contract.py`` runs both through the
same cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from playcast.protocol import RejectReason

# --- what is shared ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    id: str
    node: str
    game: str
    codecs: tuple[str, ...]
    addr: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True)
class ClientEntry:
    id: str
    node: str
    game: str
    codecs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionEntry:
    id: str
    worker: str
    worker_node: str
    client: str
    client_node: str
    game: str
    codec: str
    started_at: float  # wall-clock seconds
    phase: str = "awaiting_offer"


# --- operations the core asks for ------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """A worker is available: pair it with the first waiting client that can
    use it, or put it in its game's pool. ``session_id`` names the session
    if it is paired at once."""

    worker: WorkerEntry
    session_id: str
    now: float


@dataclass(frozen=True, slots=True)
class Pair:
    """A client wants a worker: the longest-available one of its game that
    sends a codec it decodes; else a place in line (``queue_limit`` > 0)."""

    client: ClientEntry
    session_id: str
    queue_limit: int
    now: float


@dataclass(frozen=True, slots=True)
class Withdraw:
    """A worker is gone: out of the pool and the directory."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class LeaveLine:
    """A waiting client is gone (left, timed out, disconnected)."""

    client_id: str
    game: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """A session is over. ``worker_id``: its worker, which leaves the
    directory in the same step (a worker restarts after every session, so
    its own ``Withdraw`` is not needed)."""

    session_id: str
    worker_id: str = ""


@dataclass(frozen=True, slots=True)
class MarkConnected:
    session_id: str


@dataclass(frozen=True, slots=True)
class SetTokens:
    """Resume: what is kept of each member's token (hex SHA-256)."""

    session_id: str
    worker: str
    client: str


@dataclass(frozen=True, slots=True)
class Reattach:
    """Resume on ``node``: if ``token`` is the member's, spend it (``fresh``
    replaces it) and move the member there."""

    session_id: str
    role: str
    token: str
    fresh: str
    node: str


Op = Publish | Pair | Withdraw | LeaveLine | EndSession | MarkConnected | SetTokens | Reattach


# --- what the core is told back --------------------------------------------


@dataclass(frozen=True, slots=True)
class Paired:
    session: SessionEntry
    worker: WorkerEntry
    client: ClientEntry
    line: tuple[ClientEntry, ...] | None = None  # the line, if pairing changed it


@dataclass(frozen=True, slots=True)
class Listed:
    """The worker is in its game's pool."""


@dataclass(frozen=True, slots=True)
class Queued:
    line: tuple[ClientEntry, ...]  # the whole line, in order; the client is in it


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing to report (withdraw, end, mark), but the line if it changed."""

    line: tuple[ClientEntry, ...] | None = None
    game: str = ""


@dataclass(frozen=True, slots=True)
class Reattached:
    session: SessionEntry  # with the member's new node
    old_node: str  # where the member was
    old_alive: bool
    partner_alive: bool


@dataclass(frozen=True, slots=True)
class Denied:
    """No such session, or not that member's token."""


Outcome = Paired | Listed | Queued | Refused | Done | Reattached | Denied


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A dead node's cleanup: the waiting lines it changed, and each member
    on a live node of a session it ended or kept, as (node, member id,
    session id). Such a member's node may never have been told of the
    session (the dead node paired it, then died before saying so): unless it
    knows the session, the member goes back as it came (``bus.Again``)."""

    lines: dict[str, tuple[ClientEntry, ...]]
    partners: tuple[tuple[str, str, str], ...] = ()


def shared_codec(worker_codecs: Iterable[str], client_codecs: Iterable[str]) -> str | None:
    """The worker's most preferred codec that the client decodes."""
    wanted = set(client_codecs)
    return next((c for c in worker_codecs if c in wanted), None)


# --- in process ---------------------------------------------------------------


@dataclass(slots=True)
class _Game:
    # Dicts keep insertion order: the first entry has waited longest.
    pool: dict[str, WorkerEntry] = field(default_factory=dict)
    line: dict[str, ClientEntry] = field(default_factory=dict)
    codecs: dict[str, int] = field(default_factory=dict)  # registered workers per codec


class MemoryShared:
    """The shared state in one process: exact, synchronous, and the model the
    Redis scripts follow line by line."""

    def __init__(self, games: Iterable[str]) -> None:
        self.games: dict[str, _Game] = {g: _Game() for g in games}
        self.workers: dict[str, WorkerEntry] = {}
        self.busy: set[str] = set()
        self.sessions: dict[str, SessionEntry] = {}
        self.tokens: dict[str, dict[str, str]] = {}
        self.dead: set[str] = set()

    def execute(self, op: Op) -> Outcome:
        if isinstance(op, Publish):
            return self._publish(op)
        if isinstance(op, Pair):
            return self._pair(op)
        if isinstance(op, Withdraw):
            return self._withdraw(op.worker_id)
        if isinstance(op, LeaveLine):
            return self._leave_line(op.client_id, op.game)
        if isinstance(op, EndSession):
            self.sessions.pop(op.session_id, None)
            self.tokens.pop(op.session_id, None)
            if op.worker_id:
                self._withdraw(op.worker_id)
            return Done()
        if isinstance(op, SetTokens):
            if op.session_id in self.sessions:
                self.tokens[op.session_id] = {"worker": op.worker, "client": op.client}
            return Done()
        if isinstance(op, Reattach):
            return self._reattach(op)
        old = self.sessions.get(op.session_id)
        if old is not None:
            self.sessions[op.session_id] = _with_phase(old, "connected")
        return Done()

    def _publish(self, op: Publish) -> Outcome:
        w = op.worker
        game = self.games[w.game]
        if w.id not in self.workers:
            for name in w.codecs:
                game.codecs[name] = game.codecs.get(name, 0) + 1
        self.workers[w.id] = w
        self.busy.discard(w.id)
        for client in game.line.values():
            codec = shared_codec(w.codecs, client.codecs)
            if codec is not None:
                del game.line[client.id]
                return Paired(
                    self._start(op.session_id, w, client, codec, op.now),
                    w,
                    client,
                    tuple(game.line.values()),
                )
        game.pool[w.id] = w
        return Listed()

    def _pair(self, op: Pair) -> Outcome:
        c = op.client
        game = self.games[c.game]
        for w in game.pool.values():
            codec = shared_codec(w.codecs, c.codecs)
            if codec is not None:
                del game.pool[w.id]
                return Paired(self._start(op.session_id, w, c, codec, op.now), w, c)
        if not any(codec in game.codecs for codec in c.codecs) and game.codecs:
            return Refused("unsupported_browser")
        if op.queue_limit > 0 and len(game.line) < op.queue_limit:
            game.line[c.id] = c
            return Queued(tuple(game.line.values()))
        return Refused("no_worker_available")

    def _start(
        self, sid: str, w: WorkerEntry, c: ClientEntry, codec: str, now: float
    ) -> SessionEntry:
        session = SessionEntry(sid, w.id, w.node, c.id, c.node, c.game, codec, now)
        self.sessions[sid] = session
        self.busy.add(w.id)
        return session

    def _reattach(self, op: Reattach) -> Outcome:
        s = self.sessions.get(op.session_id)
        kept = self.tokens.get(op.session_id, {})
        if s is None or kept.get(op.role) != op.token:
            return Denied()
        kept[op.role] = op.fresh
        old = s.worker_node if op.role == "worker" else s.client_node
        moved = SessionEntry(
            s.id,
            s.worker,
            op.node if op.role == "worker" else s.worker_node,
            s.client,
            op.node if op.role == "client" else s.client_node,
            s.game,
            s.codec,
            s.started_at,
            s.phase,
        )
        self.sessions[s.id] = moved
        partner = moved.client_node if op.role == "worker" else moved.worker_node
        return Reattached(moved, old, old not in self.dead, partner not in self.dead)

    def _withdraw(self, worker_id: str) -> Outcome:
        w = self.workers.pop(worker_id, None)
        self.busy.discard(worker_id)
        if w is None:
            return Done()
        game = self.games[w.game]
        game.pool.pop(w.id, None)
        for codec in w.codecs:
            left = game.codecs.get(codec, 0) - 1
            if left > 0:
                game.codecs[codec] = left
            else:
                game.codecs.pop(codec, None)
        return Done()

    def _leave_line(self, client_id: str, game_name: str) -> Outcome:
        game = self.games.get(game_name)
        if game is None or game.line.pop(client_id, None) is None:
            return Done()
        return Done(tuple(game.line.values()), game_name)

    def forget_node(self, node: str, *, keep_sessions: bool = False) -> Forgotten:
        """A node is dead: nothing of it stays (but its sessions, for the
        grace, when members may resume elsewhere)."""
        self.dead.add(node)
        for wid in [w.id for w in self.workers.values() if w.node == node]:
            self._withdraw(wid)
        partners = []
        for s in [s for s in self.sessions.values() if node in (s.worker_node, s.client_node)]:
            where, member = (
                (s.client_node, s.client) if s.worker_node == node else (s.worker_node, s.worker)
            )
            if where not in self.dead:
                partners.append((where, member, s.id))
            if not keep_sessions:
                del self.sessions[s.id]
                self.tokens.pop(s.id, None)
        changed = {}
        for name, game in self.games.items():
            gone = [cid for cid, c in game.line.items() if c.node == node]
            for cid in gone:
                del game.line[cid]
            if gone:
                changed[name] = tuple(game.line.values())
        return Forgotten(changed, tuple(partners))


def _with_phase(s: SessionEntry, phase: str) -> SessionEntry:
    return SessionEntry(
        s.id, s.worker, s.worker_node, s.client, s.client_node, s.game, s.codec, s.started_at, phase
    )
