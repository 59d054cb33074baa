"""Random sequences against three nodes sharing one state, their work
interleaved at random: no internal error on any node (a 1011 close, an ERROR
log line, ``playcast_internal_errors``: the hub contains them, so "must not
raise" is not enough), the invariants hold on every node and cluster-wide
(production's checks, and the model's rules checked again independently
whenever no node has work in flight, invariants.py), no worker is in two
sessions, and nobody gets a stranger's message."""

from __future__ import annotations

import json
from typing import Any

from clusterkit import GAME, Cluster, FakeConn
from hubkit import examples
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from invariants import Deliveries, InternalErrors, internal_errors, model_problems
from test_hub_properties import frames

from playcast.protocol import Answer, Assigned, IceCandidate, Offer, SessionStart
from playcast.signaling.types import Client, Worker

NODES = ("A", "B", "C")

ops = st.one_of(
    st.tuples(st.just("open_worker"), st.sampled_from(NODES)),
    st.tuples(st.just("open_client"), st.sampled_from(NODES)),
    st.tuples(st.just("send"), st.tuples(st.integers(0, 9), frames(), st.booleans())),
    st.tuples(st.just("close"), st.integers(0, 9)),
    st.tuples(st.just("step"), st.lists(st.sampled_from(NODES), min_size=1, max_size=8)),
    st.tuples(st.just("tick"), st.floats(0.1, 3.0)),
    st.tuples(st.just("kill"), st.sampled_from(NODES)),
    # An operator (issue 26) on any node: drain (True) or undrain a name; restart a peer.
    st.tuples(st.just("hold"), st.tuples(st.sampled_from(NODES), st.integers(0, 2), st.booleans())),
    st.tuples(st.just("restart"), st.tuples(st.sampled_from(NODES), st.integers(0, 9))),
)


PAIRED_THEN_DEAD: list[tuple[str, Any]] = [
    ("open_worker", "A"),
    ("open_worker", "A"),
    ("open_client", "C"),
    ("open_worker", "A"),
    ("open_worker", "A"),
    ("step", ["A", "C"]),
    ("close", 2),
    ("kill", "C"),
]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=10, max_size=60), st.integers(0, 4), st.sampled_from([0.0, 1.5]))
# C pairs its player with A's worker, the player leaves, and C dies before
# its requests run. Without a grace: C's End must not reach A without the
# EndSession before it, or the worker's record outlives it. With one: C
# never told A (its Start waits behind the tokens' write), and the worker
# must go back to the pool, not stay out of it for good.
@example(steps=PAIRED_THEN_DEAD, queue_limit=0, grace=0.0)
@example(steps=PAIRED_THEN_DEAD, queue_limit=0, grace=1.5)
def test_any_interleaving_keeps_the_cluster_consistent(
    steps: list[tuple[str, Any]], queue_limit: int, grace: float
) -> None:
    with internal_errors() as errors:
        _play(steps, queue_limit, grace, errors)


def _play(
    steps: list[tuple[str, Any]], queue_limit: int, grace: float, errors: InternalErrors
) -> None:
    cluster = Cluster(
        heartbeat_timeout=4.0,
        handshake_timeout=3.0,
        inactivity_timeout=6.0,
        shutdown_ack_timeout=1.0,
        queue_limit=queue_limit,
        resume_grace=grace,
        max_message_burst=30.0,
        max_error_burst=20.0,
    )
    peers: list[tuple[str, Worker | Client, FakeConn]] = []
    own: dict[int, set[str]] = {}
    deliveries = Deliveries()
    apply = cluster.shared.apply  # (what the cluster kit calls: execute is its async face)

    def pair_and_record(op: Any) -> Any:  # every session as the pairing made it
        outcome = apply(op)
        deliveries.paired(cluster.shared.sessions.values())
        return outcome

    cluster.shared.apply = pair_and_record  # type: ignore[method-assign]
    conns: list[FakeConn] = []  # every connection, a dead node's too
    killed = False
    for op, arg in steps:
        if op == "open_worker" and arg in cluster.hubs:
            conn = FakeConn()
            conns.append(conn)
            peers.append((arg, cluster.hubs[arg].open_worker(conn), conn))
            name = f"n{len(peers) % 3}"  # one of three, shared: a drain holds several
            cluster.hubs[arg].on_message(
                peers[-1][1], json.dumps({"type": "register", "game": GAME, "name": name})
            )
        elif op == "open_client" and arg in cluster.hubs:
            conn = FakeConn()
            conns.append(conn)
            peers.append((arg, cluster.hubs[arg].open_client(conn), conn))
            cluster.hubs[arg].on_message(peers[-1][1], '{"type":"join"}')
        elif op == "send" and peers:
            index, frame, stranger = arg
            node, peer, conn = peers[index % len(peers)]
            if node not in cluster.hubs:
                continue
            mine = own.get(id(conn), set())
            sid = next(iter(mine), "SID")
            live = sorted({s for h in cluster.hubs.values() for s in h.sessions} - mine)
            if stranger and live:
                sid = live[index % len(live)]
            cluster.hubs[node].on_message(peer, frame.replace('"SID"', json.dumps(sid)))
        elif op == "close" and peers:
            node, peer, conn = peers[arg % len(peers)]
            if node in cluster.hubs:
                conn.closed = conn.closed or (1006, "")
                cluster.hubs[node].on_close(peer)
        elif op == "hold" and arg[0] in cluster.hubs:
            node, name, on = arg
            cluster.hubs[node].hold(f"n{name}", on)
        elif op == "restart" and peers and arg[0] in cluster.hubs:
            where, peer, _ = peers[arg[1] % len(peers)]
            if where in cluster.hubs:
                cluster.hubs[arg[0]].restart_worker(peer.id, where)
        elif op == "step":
            for node in arg:
                cluster.pending()
                cluster.step(node)
        elif op == "tick":
            cluster.advance(arg, pong=[(n, p, c) for n, p, c in peers if c.closed is None])
        elif op == "kill" and not killed and len(cluster.hubs) > 1 and arg in cluster.hubs:
            killed = True
            cluster.kill(arg)
            peers = [(n, p, c) for n, p, c in peers if n != arg]
        for node in cluster.hubs:  # each step's effects, as the socket layer does
            cluster.collect(node)
        deliveries.note(cluster.hubs.values())
        for _, peer, conn in peers:
            for msg in conn.sent:
                if isinstance(msg, SessionStart | Assigned):
                    own.setdefault(id(conn), set()).add(msg.session_id)
                elif isinstance(msg, Offer | Answer | IceCandidate):
                    event("relayed")
            deliveries.check(peer.id, conn.sent)
        errors.check(conns=conns)
        if not any(cluster.requests.values()) and not any(cluster.bus.values()):
            assert model_problems(cluster.hubs.values()) == []
    cluster.settle()
    cluster.assert_consistent()
    deliveries.note(cluster.hubs.values())
    assert model_problems(cluster.hubs.values()) == []
    sessions = len({s for h in cluster.hubs.values() for s in h.sessions})
    event(f"live sessions at the end: {min(sessions, 3)}")
    if grace:  # what waits for a member to resume has waited its grace
        cluster.advance(grace + 1.0)
        cluster.assert_consistent()
    for hub in cluster.hubs.values():
        hub.shutdown_all()
    cluster.settle()
    cluster.advance(grace + 2.0)
    for name, hub in cluster.hubs.items():
        assert not hub.workers and not hub.clients and not hub.sessions, name
    errors.check(cluster.hubs.values(), conns)
    assert not cluster.shared.workers
    # (with a grace, sessions kept for a resume elsewhere expire in Redis;
    # MemoryShared keeps them)
    assert not cluster.shared.sessions or grace
    assert all(not g.pool and not g.line for g in cluster.shared.games.values())
