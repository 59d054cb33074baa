"""The shared state in one process: exact, synchronous, and the model the
Redis scripts (``redis_state.py``, ``lua/``) follow rule for rule.

A lone server keeps its shared state here and settles each operation within
the step that asked (``apply``, ``forget``); the async ``SharedState``
methods wrap those for code written against either implementation. There is
no clock: sessions kept for a resume grace stay until they are ended, and
spent tickets are swept by the time a ``Pair`` carries (``now``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from playcast.signaling.shared import dump
from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.dump import Dump
from playcast.signaling.shared.records import (
    ClientEntry,
    Denied,
    Done,
    EndSession,
    Forgotten,
    Held,
    Hold,
    HoldChanged,
    LeaveLine,
    Listed,
    MarkConnected,
    Op,
    Outcome,
    Pair,
    Paired,
    Publish,
    Queued,
    Reattach,
    Reattached,
    Refused,
    SessionEntry,
    SetTokens,
    Withdraw,
    WorkerEntry,
    pxat,
    shared_codec,
)

# Spent tickets are swept of the expired ones when they reach this many (or
# twice as many as the last sweep kept): amortized, no clock of its own.
SWEEP_FROM = 1024


@dataclass(slots=True)
class _Game:
    # Dicts keep insertion order: the first entry has waited longest.
    pool: dict[str, WorkerEntry] = field(default_factory=dict)
    line: dict[str, ClientEntry] = field(default_factory=dict)
    codecs: dict[str, int] = field(default_factory=dict)  # registered workers per codec


class MemoryShared:
    """The shared state in one process: exact, synchronous, and the model the
    Redis scripts follow rule for rule."""

    def __init__(self, games: Iterable[str]) -> None:
        self.games: dict[str, _Game] = {g: _Game() for g in games}
        self.workers: dict[str, WorkerEntry] = {}
        self.busy: dict[str, str] = {}  # worker -> the session it is busy in
        self.sessions: dict[str, SessionEntry] = {}
        self.tokens: dict[str, dict[str, str]] = {}
        self.dead: set[str] = set()
        self.spent: dict[str, float] = {}  # ticket jti -> until when (wall clock)
        self._sweep_at = SWEEP_FROM
        self.holds: dict[str, set[str]] = {}  # a held name -> its workers held now

    async def execute(self, op: Op) -> Outcome:
        return self.apply(op)

    async def forget_node(
        self, node: str, *, force: bool = False, grace: float = 0.0
    ) -> Forgotten | None:
        return self.forget(node, force=force, grace=grace)

    async def dump(self) -> Dump:
        return self.read()

    def read(self) -> Dump:
        """The whole state in ``dump``'s canonical form. A node's sets are
        what its cleanup would find; a dead node has none."""
        out = dump.empty()
        for w in self.workers.values():
            out["directory"][w.id] = dump.worker(
                w.node, w.game, w.codecs, w.addr, w.port, w.id in self.busy,
                w.name, w.id in self.holds.get(w.name, ()),
            )  # fmt: skip
            if w.node not in self.dead:
                dump.add(out, "node_workers", w.node, w.id)
        for name, game in self.games.items():
            out["pools"][name] = list(game.pool)
            out["lines"][name] = list(game.line)
            out["codecs"][name] = dict(sorted(game.codecs.items()))
            for c in game.line.values():
                out["waiting"][c.id] = dump.client(c.node, c.game, c.codecs)
                if c.node not in self.dead:
                    dump.add(out, "node_clients", c.node, c.id)
        out["holds"] = {name: sorted(ids) for name, ids in self.holds.items()}
        for s in self.sessions.values():
            out["sessions"][s.id] = dump.session(s, self.tokens.get(s.id))
            if s.client_node not in self.dead:
                dump.add(out, "node_sessions", s.client_node, s.id)
        out["spent"] = {jti: pxat(until) for jti, until in self.spent.items()}
        return dump.finish(out)

    def apply(self, op: Op) -> Outcome:
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
        if isinstance(op, Hold):
            return self._hold(op)
        if isinstance(op, MarkConnected):
            old = self.sessions.get(op.session_id)
            if old is not None:
                self.sessions[op.session_id] = _with_phase(old, "connected")
            return Done()
        raise TypeError(f"not a shared-state operation: {op!r}")

    def _publish(self, op: Publish) -> Outcome:
        w = op.worker
        game = self.games[w.game]
        if w.id not in self.workers:
            for name in w.codecs:
                game.codecs[name] = game.codecs.get(name, 0) + 1
        self.workers[w.id] = w
        self.busy.pop(w.id, None)
        if w.name in self.holds:  # in the directory, not in the pool
            game.pool.pop(w.id, None)
            self.holds[w.name].add(w.id)
            return Held()
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
        if op.jti and self.spent.get(op.jti, 0.0) > op.now:
            return Refused("unauthorized", "spent")
        outcome = self._find(op)
        if op.jti and isinstance(outcome, Paired | Queued):
            self._spend(op.jti, op.jti_until, op.now)
        return outcome

    def _spend(self, jti: str, until: float, now: float) -> None:
        if until <= now:
            return  # expired already (Redis keeps no key set to expire in the past)
        self.spent[jti] = until
        if len(self.spent) >= self._sweep_at:
            self.spent = {j: u for j, u in self.spent.items() if u > now}
            self._sweep_at = max(SWEEP_FROM, 2 * len(self.spent))

    def _find(self, op: Pair) -> Outcome:
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
        self.busy[w.id] = sid
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
        if op.role == "worker":
            # Held on op.node now: its record names that node, whose death
            # (not the old one's) withdraws it. Withdrawn meanwhile (its old
            # node's cleanup, with a grace), it is written anew, sending no
            # codec: busy, and counted nowhere.
            w = self.workers.get(s.worker) or WorkerEntry(s.worker, op.node, s.game, ())
            self.workers[s.worker] = WorkerEntry(
                s.worker, op.node, s.game, w.codecs, w.addr, w.port, w.name
            )
            self.busy[s.worker] = s.id
        partner = moved.client_node if op.role == "worker" else moved.worker_node
        return Reattached(moved, old, old not in self.dead, partner not in self.dead)

    def _withdraw(self, worker_id: str) -> Outcome:
        w = self.workers.pop(worker_id, None)
        self.busy.pop(worker_id, None)
        if w is None:
            return Done()
        game = self.games[w.game]
        game.pool.pop(w.id, None)
        if w.name in self.holds:
            self.holds[w.name].discard(w.id)
        for codec in w.codecs:
            left = game.codecs.get(codec, 0) - 1
            if left > 0:
                game.codecs[codec] = left
            else:
                game.codecs.pop(codec, None)
        return Done()

    def _hold(self, op: Hold) -> Outcome:
        """On: the name is held, and its workers available in ``op.games``
        leave their pools. Off: released, with the workers it held."""
        moved: list[tuple[str, str]] = []
        if not op.on:
            for wid in self.holds.pop(op.name, set()):
                moved.append((wid, self.workers[wid].node))
            return HoldChanged(tuple(sorted(moved)))
        held = self.holds.setdefault(op.name, set())
        for name in op.games:
            pool = self.games[name].pool if name in self.games else {}
            for wid in [wid for wid, w in pool.items() if w.name == op.name]:
                del pool[wid]
                held.add(wid)
                moved.append((wid, self.workers[wid].node))
        return HoldChanged(tuple(sorted(moved)))

    def _leave_line(self, client_id: str, game_name: str) -> Outcome:
        game = self.games.get(game_name)
        if game is None or game.line.pop(client_id, None) is None:
            return Done()
        return Done(tuple(game.line.values()), game_name)

    def forget(self, node: str, *, force: bool = False, grace: float = 0.0) -> Forgotten | None:
        """A node is dead: nothing of it stays (but its sessions, with a
        ``grace``, when members may resume elsewhere). Every node counts as
        announced, and is cleaned up once: None after that, unless ``force``;
        forced, a cleanup finds nothing an earlier one left (as in Redis,
        where it took the node's sets: what it kept for a grace stays so)."""
        if node in self.dead:
            return Forgotten({}) if force else None
        self.dead.add(node)
        # Its sessions as Redis finds them: through each of its workers'
        # records (the session it is busy in) and its players' set. A
        # session whose worker was withdrawn while it was recorded is not
        # found here (docs/cluster.md, "A known gap").
        found: list[tuple[str, bool]] = []  # (session, the worker is the one here)
        for w in [w for w in self.workers.values() if w.node == node]:
            if self.busy.get(w.id) in self.sessions:
                found.append((self.busy[w.id], True))
            self._withdraw(w.id)
        found += [(s.id, False) for s in self.sessions.values() if s.client_node == node]
        partners = []
        for sid, worker_here in found:
            s = self.sessions.get(sid)
            if s is None:
                continue  # found twice, and ended
            where, member = (s.client_node, s.client) if worker_here else (s.worker_node, s.worker)
            if where not in self.dead:
                partners.append((where, member, s.id))
            if grace <= 0:
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


_KEEPS_THE_INTERFACE: type[SharedState] = MemoryShared  # (checked by mypy)
