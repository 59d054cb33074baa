"""The two implementations of the shared state, driven side by side with
random operation sequences (every op, and forgetting nodes with and without
a grace, forced or claimed): after every step both must have answered the
same, and ``dump`` must read the same state back from both. MemoryShared is
the model the cluster tests run on; RedisShared runs on a real redis-server.

What the sequences respect is what the cluster guarantees, nothing more:
ids are unique (a worker's or a client's registration never changes; a
session id is never reused); a node asks nothing once it is dead; a worker
offers itself from the node that holds it (where it registered, or
resumed); and a member offers itself again (Publish, Pair) only once no
session names it (its node ends that session first: pairing.offer_again).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterator
from typing import Any, ClassVar, TypeVar, get_args

import pytest
from hubkit import examples
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from playcast_testing.redis_server import RedisServer
from redis.asyncio import Redis

from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.memory import MemoryShared
from playcast.signaling.shared.records import (
    ClientEntry,
    EndSession,
    Forgotten,
    Held,
    Hold,
    HoldChanged,
    LeaveLine,
    MarkConnected,
    Op,
    Outcome,
    Pair,
    Paired,
    Publish,
    Reattach,
    Reattached,
    Refused,
    SetTokens,
    Withdraw,
    WorkerEntry,
)
from playcast.signaling.shared.redis_state import RedisShared

NODES = ("A", "B", "C", "D")
GAMES = ("g1", "g2")
CODECS = ("H264", "VP8")
WORKERS = [f"w{i}" for i in range(16)]
NAMES = ["n0", "n1", "n2", "n3"]  # a worker's name: w{i} is n{i % 4}, or none (w12 on)
CLIENTS = [f"c{i}" for i in range(16)]
GRACE = 3600.0  # never runs out within an example: MemoryShared has no clock
# Join tickets: a few ids, so that some come again (spent, or not yet); kept
# until far ahead, or until long past (both sides then keep nothing: Redis by
# its clock, memory by the Pair's ``now``, which counts from 1 here).
TICKETS = ("", "", "j1", "j2", "j3")
UNTIL = (4_102_444_800.0, 0.5)  # 2100, and 1970

codec_lists = st.lists(st.sampled_from(CODECS), min_size=1, max_size=3, unique=True)
T = TypeVar("T")


class Differential(RuleBasedStateMachine):
    # Set by the test: one redis-server and one event loop for every example.
    loop: ClassVar[asyncio.AbstractEventLoop]
    redis: ClassVar[Redis]
    tried: ClassVar[set[str]] = set()  # what the search asked of both, by kind

    def __init__(self) -> None:
        super().__init__()
        self.run(self.redis.flushall())
        for node in NODES:
            self.run(RedisShared(self.redis).beat(node, GRACE, "{}"))
        self.memory = MemoryShared(GAMES)
        self.sides: tuple[SharedState, SharedState] = (self.memory, RedisShared(self.redis))
        self.live = set(NODES)
        self.workers: dict[str, WorkerEntry] = {}  # as registered, with its node now
        self.clients: dict[str, ClientEntry] = {}
        self.sessions: list[str] = ["s-none"]
        self.ids = itertools.count(1)
        self.now = 0.0
        self.since_forget = 0

    def run(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    def both(self, op: Op) -> Outcome:
        memory, redis = (self.run(side.execute(op)) for side in self.sides)
        assert memory == redis, f"{op}: memory {memory} != redis {redis}"
        self.since_forget += 1
        self.tried.add(type(op).__name__)
        if isinstance(memory, Held):
            self.tried.add("Publish: held")
        event(f"{type(op).__name__} -> {type(memory).__name__}")
        return memory

    def pick_session(self, data: st.DataObject) -> str:
        """Mostly a live session (the memory's: both hold the same), else any
        id ever used, or one never paired."""
        live = sorted(self.memory.sessions)
        if live and data.draw(st.booleans()):
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from(self.sessions))

    def fresh(self) -> str:
        self.now += 1.0
        sid = f"s{next(self.ids)}"
        self.sessions.append(sid)
        return sid

    @invariant()
    def same_state(self) -> None:
        memory, redis = (self.run(side.dump()) for side in self.sides)
        assert memory == redis

    # --- the operations --------------------------------------------------

    def usable(
        self, data: st.DataObject, ids: list[str], known: dict[str, Any], busy: set[str]
    ) -> str | None:
        """An id not yet registered, or one whose node is alive (one whose
        node died went with it: a new id registers elsewhere), and in no
        session: a member offers itself again only once its session ended."""
        usable = [i for i in ids if (i not in known or known[i].node in self.live)]
        usable = [i for i in usable if i not in busy]
        return data.draw(st.sampled_from(usable)) if usable else None

    @rule(data=st.data(), game=st.sampled_from(GAMES), codecs=codec_lists, port=st.integers(1, 3))
    def publish(self, data: st.DataObject, game: str, codecs: list[str], port: int) -> None:
        busy = {s.worker for s in self.memory.sessions.values()}
        wid = self.usable(data, WORKERS, self.workers, busy)
        if wid is None:
            return
        if wid not in self.workers:
            node = data.draw(st.sampled_from(sorted(self.live)))
            name = NAMES[int(wid[1:]) % 4] if int(wid[1:]) < 12 else ""
            self.workers[wid] = WorkerEntry(wid, node, game, tuple(codecs), "10.0.0.1", port, name)
        self.paired(data, self.both(Publish(self.workers[wid], self.fresh(), self.now)))

    @rule(
        data=st.data(),
        game=st.sampled_from(GAMES),
        codecs=codec_lists,
        limit=st.integers(0, 3),
        jti=st.sampled_from(TICKETS),
        until=st.sampled_from(UNTIL),
    )
    def pair(
        self, data: st.DataObject, game: str, codecs: list[str], limit: int, jti: str, until: float
    ) -> None:
        busy = {s.client for s in self.memory.sessions.values()}
        cid = self.usable(data, CLIENTS, self.clients, busy)
        if cid is None:
            return
        if cid not in self.clients:
            node = data.draw(st.sampled_from(sorted(self.live)))
            self.clients[cid] = ClientEntry(cid, node, game, tuple(codecs))
        op = Pair(self.clients[cid], self.fresh(), limit, self.now, jti, until if jti else 0.0)
        outcome = self.both(op)
        if isinstance(outcome, Refused) and outcome.reason == "unauthorized":
            self.tried.add("Pair(spent)")
        self.paired(data, outcome)

    def paired(self, data: st.DataObject, outcome: Outcome) -> None:
        """With resume on, a pairing's node writes its tokens next."""
        if isinstance(outcome, Paired) and data.draw(st.booleans()):
            n = next(self.ids)
            self.both(SetTokens(outcome.session.id, f"{n:064x}", f"{n + 1:064x}"))

    # The rules that take no one in or out share a rule each (hypothesis
    # picks rules alike: this keeps enough workers and clients coming).
    @rule(
        wid=st.sampled_from(WORKERS),
        cid=st.sampled_from(CLIENTS),
        game=st.sampled_from(GAMES),
        worker=st.booleans(),
    )
    def leave(self, wid: str, cid: str, game: str, worker: bool) -> None:
        self.both(Withdraw(wid) if worker else LeaveLine(cid, game))

    @rule(data=st.data(), kind=st.sampled_from(["tokens", "mark", "end"]), worker=st.booleans())
    def session(self, data: st.DataObject, kind: str, worker: bool) -> None:
        sid = self.pick_session(data)
        s = self.memory.sessions.get(sid)
        if kind == "mark":
            self.both(MarkConnected(sid))
        elif kind == "tokens":
            n = next(self.ids)
            self.both(SetTokens(sid, f"{n:064x}", f"{n + 1:064x}"))
        else:
            self.both(EndSession(sid, s.worker if s is not None and worker else ""))

    @rule(
        data=st.data(),
        role=st.sampled_from(["worker", "client"]),
        right=st.booleans(),
        node=st.sampled_from(NODES),
    )
    def reattach(self, data: st.DataObject, role: str, right: bool, node: str) -> None:
        resumable = sorted(sid for sid in self.memory.tokens if sid in self.memory.sessions)
        if resumable and data.draw(st.booleans()):
            sid = data.draw(st.sampled_from(resumable))
        else:
            sid = self.pick_session(data)
        s = self.memory.sessions.get(sid)
        gone = {s.worker_node, s.client_node} - self.live if s is not None else set()
        if s is not None and gone and data.draw(st.booleans()):
            role = "worker" if s.worker_node in gone else "client"  # its node died
        token = self.memory.tokens.get(sid, {}).get(role, "") if right else "f" * 64
        if node not in self.live:
            node = min(self.live)
        moved = self.both(Reattach(sid, role, token, f"{next(self.ids):064x}", node))
        if isinstance(moved, Reattached) and role == "worker":
            w = self.workers[moved.session.worker]  # the worker is held there now
            self.workers[w.id] = WorkerEntry(w.id, node, w.game, w.codecs, w.addr, w.port, w.name)

    @rule(data=st.data(), on=st.booleans(), games=st.sampled_from([GAMES, GAMES[:1]]))
    def hold(self, data: st.DataObject, on: bool, games: tuple[str, ...]) -> None:
        """Mostly a name with workers to move: available ones to hold, held
        ones to release; else any name."""
        if on:
            pooled = {w.name for g in self.memory.games.values() for w in g.pool.values()}
            names = sorted(pooled - {""})
        else:
            names = sorted(self.memory.holds)
        if not (names and data.draw(st.booleans())):
            names = NAMES
        out = self.both(Hold(data.draw(st.sampled_from(names)), on, games))
        if isinstance(out, HoldChanged) and out.workers:
            self.tried.add(f"Hold(on={on}) moving workers")

    # A few operations between deaths, so that there is something to clean up.
    @precondition(lambda self: self.since_forget >= 6)
    @rule(node=st.sampled_from(NODES), grace=st.sampled_from([0.0, GRACE]), force=st.booleans())
    def forget_node(self, node: str, grace: float, force: bool) -> None:
        if node in self.live and len(self.live) == 1:
            return  # one node stays to ask things
        self.since_forget = 0
        memory, redis = (
            self.run(side.forget_node(node, force=force, grace=grace)) for side in self.sides
        )
        assert _sorted(memory) == _sorted(redis), f"memory {memory} != redis {redis}"
        self.tried.add(f"forget_node(grace={grace > 0})")
        self.live.discard(node)


def _sorted(cleaned: Forgotten | None) -> Forgotten | None:
    """Who is named matters, not in which order (a Redis set's)."""
    if cleaned is None:
        return None
    return Forgotten(cleaned.lines, tuple(sorted(cleaned.partners)))


@pytest.fixture(scope="module")
def redis_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, Redis]]:
    loop = asyncio.new_event_loop()
    server = RedisServer()
    loop.run_until_complete(server.start())
    redis = Redis.from_url(server.url)
    try:
        yield loop, redis
    finally:
        loop.run_until_complete(redis.aclose())
        loop.run_until_complete(server.kill())
        loop.close()


def test_both_implementations_agree_on_any_sequence(
    redis_loop: tuple[asyncio.AbstractEventLoop, Redis],
) -> None:
    Differential.loop, Differential.redis = redis_loop
    Differential.tried.clear()
    run_state_machine_as_test(
        Differential,
        settings=settings(
            max_examples=examples(30),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            # The same sequences every run: the coverage asserted below is then a
            # fact about the code, not the luck of one run's search (a release that
            # moved workers went unreached once in 30 random runs).
            derandomize=True,
        ),
    )
    # The search reached every operation (a rule that never runs checks nothing).
    assert Differential.tried == {
        *(op.__name__ for op in get_args(Op)),
        "Pair(spent)",
        "Publish: held",
        "Hold(on=True) moving workers",
        "Hold(on=False) moving workers",
        "forget_node(grace=False)",
        "forget_node(grace=True)",
    }
