"""The cluster's rules under a fake clock: three nodes, one shared state.

A worker and its player on different nodes go through the whole protocol;
every shutdown reason reaches both; deadlines fire once in the cluster;
pairing never hands one worker out twice; the waiting line is first come,
first served across nodes; a dead or cut-off node ends what it shared.
"""

from __future__ import annotations

import random

import pytest
from clusterkit import GAME, Cluster, FakeConn

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    IceCandidate,
    InactivityWarning,
    Input,
    Leave,
    Offer,
    Queued,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
)
from playcast.signaling.types import Client, Worker

CAND = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")


def reasons(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


def ended(cluster: Cluster) -> float:
    """Sessions ended, summed over every node: each end is counted once."""
    total = 0.0
    for hub in cluster.hubs.values():
        total += sum(hub.counters.sessions_ended.values.values())
    return total


def pair_across(cluster: Cluster) -> tuple[Worker, FakeConn, Client, FakeConn, str]:
    worker, wconn = cluster.worker("A")
    client, cconn = cluster.client("B")
    assigned = cconn.sent[0]
    assert isinstance(assigned, Assigned) and assigned.worker_id == worker.id
    start = wconn.sent[-1]
    assert isinstance(start, SessionStart) and start.session_id == assigned.session_id
    assert start.client_id == client.id
    return worker, wconn, client, cconn, assigned.session_id


def handshake(cluster: Cluster, worker: Worker, client: Client, sid: str) -> None:
    cluster.send("A", worker, Offer(session_id=sid, sdp="offer"))
    cluster.send("A", worker, IceCandidate(session_id=sid, candidate=CAND))
    cluster.send("B", client, Answer(session_id=sid, sdp="answer"))
    cluster.send("B", client, IceCandidate(session_id=sid, candidate=CAND))
    cluster.send("A", worker, WebrtcConnected(session_id=sid))
    cluster.send("B", client, WebrtcConnected(session_id=sid))


def test_with_resume_on_the_shared_record_knows_the_handshake_is_over() -> None:
    """A member resuming on a node with no copy of its session reads the
    phase from the shared record."""
    cluster = Cluster(resume_grace=5.0)
    worker, _, client, _, sid = pair_across(cluster)
    handshake(cluster, worker, client, sid)
    assert cluster.shared.sessions[sid].phase == "connected"


def test_worker_on_a_and_player_on_b_complete_the_whole_protocol() -> None:
    cluster = Cluster()
    worker, wconn, client, cconn, sid = pair_across(cluster)
    handshake(cluster, worker, client, sid)
    got_c = [m for m in cconn.sent if isinstance(m, Offer | IceCandidate)]
    got_w = [m for m in wconn.sent if isinstance(m, Answer | IceCandidate)]
    assert got_c == [
        Offer(session_id=sid, sdp="offer"),
        IceCandidate(session_id=sid, candidate=CAND),
    ]
    assert got_w == [
        Answer(session_id=sid, sdp="answer"),
        IceCandidate(session_id=sid, candidate=CAND),
    ]
    assert client.connection_state == "connected"
    assert cluster.hubs["B"].sessions[sid].phase == "connected"
    assert cluster.hubs["A"].sessions[sid].phase == "connected"  # told by the owner
    # The shared record's phase is read only by a resume: written only with it on.
    assert cluster.shared.sessions[sid].phase == "awaiting_offer"
    assert cluster.hubs["B"].counters.handshake_seconds.count == 1  # the owner's
    assert cluster.hubs["A"].counters.handshake_seconds.count == 0
    cluster.send("B", client, Input(event={"t": 1}))
    cluster.send("B", client, Leave())
    assert reasons(wconn) == ["client_left"]
    cluster.send("A", worker, ShutdownAck(ok=True, detail=""))
    assert wconn.closed == (1000, "shutdown acknowledged")
    assert not cluster.shared.sessions and not cluster.shared.busy
    assert ended(cluster) == 1
    cluster.assert_consistent()


def test_a_pairing_from_a_node_found_dead_means_it_is_back() -> None:
    """Redis restarted: A took B for dead before B renewed its liveness, then
    B paired its player with A's worker. B's word proves it alive: A relays
    to it at once, not only after its next liveness check."""
    cluster = Cluster()
    cluster.hubs["A"].node_down("B")
    cluster.settle()
    assert "B" in cluster.hubs["A"].gone_nodes
    worker, _, client, cconn, sid = pair_across(cluster)
    assert "B" not in cluster.hubs["A"].gone_nodes
    handshake(cluster, worker, client, sid)
    assert [m for m in cconn.sent if isinstance(m, Offer)] == [Offer(session_id=sid, sdp="offer")]
    assert cluster.hubs["B"].sessions[sid].phase == "connected"
    cluster.assert_consistent()


def test_relaying_never_reaches_a_stranger_across_nodes() -> None:
    cluster = Cluster()
    w1, w1conn, c1, c1conn, s1 = pair_across(cluster)
    w2, w2conn = cluster.worker("C")
    c2, c2conn = cluster.client("A")
    s2 = c2.session_id
    assert s2 is not None and s2 != s1
    cluster.send("A", w1, Offer(session_id=s2, sdp="not mine"))  # error, not relayed
    cluster.send("C", w2, Offer(session_id=s2, sdp="mine"))
    assert [m.sdp for m in c2conn.sent if isinstance(m, Offer)] == ["mine"]
    assert not [m for m in c1conn.sent if isinstance(m, Offer)]
    del w1conn, w2conn, c1


@pytest.mark.parametrize(
    ("case", "worker_reason", "client_reason"),
    [
        ("leave", "client_left", None),
        ("worker_gone", None, "worker_failed"),
        ("client_gone", "client_failed", None),
        ("handshake_failed", "handshake_failed", "handshake_failed"),
        ("handshake_timeout", "handshake_timeout", "handshake_timeout"),
        ("inactivity", "inactivity_timeout", "inactivity_timeout"),
        ("worker_heartbeat", "heartbeat_timeout", "worker_failed"),
        ("client_heartbeat", "client_failed", "heartbeat_timeout"),
        ("stop_worker_node", "server_shutdown", "worker_failed"),
        ("stop_client_node", "client_failed", "server_shutdown"),
        ("webrtc_failed_after", "client_failed", "worker_failed"),
    ],
)
def test_every_shutdown_reason_reaches_both_sides_across_nodes(
    case: str, worker_reason: str | None, client_reason: str | None
) -> None:
    cluster = Cluster(handshake_timeout=5.0, inactivity_timeout=8.0, inactivity_warning=3.0)
    worker, wconn, client, cconn, sid = pair_across(cluster)
    both = [("A", worker, wconn), ("B", client, cconn)]
    if case not in ("handshake_failed", "handshake_timeout"):
        handshake(cluster, worker, client, sid)
    if case == "leave":
        cluster.send("B", client, Leave())
    elif case == "worker_gone":
        cluster.close("A", worker)
    elif case == "client_gone":
        cluster.close("B", client)
    elif case == "handshake_failed":
        cluster.send("A", worker, Offer(session_id=sid, sdp="o"))
        cluster.send("B", client, WebrtcFailed(session_id=sid, reason="x", kind="ice"))
    elif case == "handshake_timeout":
        cluster.advance(6.0, pong=both)
    elif case == "inactivity":
        cluster.advance(9.0, pong=both)
        assert len([m for m in cconn.sent if isinstance(m, InactivityWarning)]) == 1
    elif case == "worker_heartbeat":
        cluster.advance(4.0, pong=[("B", client, cconn)])
    elif case == "client_heartbeat":
        cluster.advance(4.0, pong=[("A", worker, wconn)])
    elif case == "stop_worker_node":
        cluster.hubs["A"].shutdown_all()
        cluster.settle()
    elif case == "stop_client_node":
        cluster.hubs["B"].shutdown_all()
        cluster.settle()
    elif case == "webrtc_failed_after":
        cluster.send("A", worker, WebrtcFailed(session_id=sid, reason="pc failed", kind="media"))
    expected_w = [worker_reason] if worker_reason else []
    expected_c = [client_reason] if client_reason else []
    assert reasons(wconn) == expected_w
    assert reasons(cconn) == expected_c
    assert ended(cluster) == 1  # decided once, on one node
    assert sid not in cluster.shared.sessions
    for hub in cluster.hubs.values():
        assert sid not in hub.sessions
    cluster.assert_consistent()


def test_one_hundred_players_on_three_nodes_for_ten_workers() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        cluster = Cluster()
        nodes = list(cluster.hubs)
        workers = [cluster.worker(nodes[i % 3]) for i in range(10)]
        # All hundred join "at once": each node's work is then interleaved at
        # random, as three loaded nodes and one Redis would.
        clients: list[tuple[Client, FakeConn]] = []
        for i in range(100):
            node = nodes[i % 3]
            conn = FakeConn()
            c = cluster.hubs[node].open_client(conn)
            cluster.hubs[node].on_message(c, '{"type":"join"}')
            cluster.collect(node)
            clients.append((c, conn))
        while busy := cluster.pending():
            cluster.step(rng.choice(busy))
        assigned = [m for _, conn in clients for m in conn.sent if isinstance(m, Assigned)]
        rejected = [m for _, conn in clients for m in conn.sent if isinstance(m, Rejected)]
        assert len(assigned) == 10 and len(rejected) == 90
        assert sorted(a.worker_id for a in assigned) == sorted(w.id for w, _ in workers)
        starts = [m for _, conn in workers for m in conn.sent if isinstance(m, SessionStart)]
        assert len(starts) == 10
        cluster.assert_consistent()


def test_the_line_is_first_come_first_served_across_nodes() -> None:
    cluster = Cluster(queue_limit=4, queue_timeout=30.0)
    worker, wconn = cluster.worker("A")
    first, _ = cluster.client("B")  # takes the only worker
    waiting = [cluster.client(node) for node in ("C", "A", "B", "C")]
    for position, (_, conn) in enumerate(waiting, start=1):
        assert conn.sent == [Queued(position=position, game=GAME)]
    extra, extra_conn = cluster.client("A")
    assert isinstance(extra_conn.sent[0], Rejected)
    assert extra_conn.sent[0].reason == "no_worker_available"
    # The second in line leaves: those behind it move up.
    cluster.send("A", waiting[1][0], Leave())
    assert waiting[0][1].sent[-1] == Queued(position=1, game=GAME)
    assert waiting[2][1].sent[-1] == Queued(position=2, game=GAME)
    assert waiting[3][1].sent[-1] == Queued(position=3, game=GAME)
    # The first session ends; its worker comes back as a new one (a restart)
    # and goes to the head of the line, wherever that player is.
    cluster.send("B", first, Leave())
    cluster.send("A", worker, ShutdownAck(ok=True, detail=""))
    again, again_conn = cluster.worker("B")
    head, head_conn = waiting[0]
    assert isinstance(head_conn.sent[-1], Assigned)
    assert head_conn.sent[-1].worker_id == again.id
    assert head.connection_state == "connecting"
    assert waiting[2][1].sent[-1] == Queued(position=1, game=GAME)
    assert waiting[3][1].sent[-1] == Queued(position=2, game=GAME)
    cluster.assert_consistent()
    del wconn, again_conn, extra


def test_waiting_does_not_count_as_idle_and_times_out_on_its_own_clock() -> None:
    cluster = Cluster(
        queue_limit=2, queue_timeout=5.0, inactivity_timeout=3.0, inactivity_warning=0.0
    )
    w, wconn = cluster.worker("A")
    first, fconn = cluster.client("B")
    waiting, qconn = cluster.client("C")
    peers = [("A", w, wconn), ("B", first, fconn), ("C", waiting, qconn)]
    cluster.advance(2.0, pong=peers)
    cluster.send("B", first, Input(event={}))
    cluster.advance(2.0, pong=peers)
    cluster.send("B", first, Input(event={}))
    assert qconn.closed is None  # 4 s waiting: longer than the idle limit, still in line
    cluster.advance(1.5, pong=peers)
    (rejected,) = [m for m in qconn.sent if isinstance(m, Rejected)]
    assert rejected.reason == "queue_timeout"
    assert not cluster.shared.games[GAME].line
    cluster.assert_consistent()


def test_a_killed_worker_node_ends_its_sessions_and_leaves_nothing_available() -> None:
    cluster = Cluster()
    w1, _, c1, c1conn, s1 = pair_across(cluster)  # worker on A, player on B
    w3, w3conn = cluster.worker("C")
    c3, c3conn = cluster.client("A")  # worker on C, player on A
    assert c3.worker_id == w3.id
    cluster.worker("A")  # idle, on A
    cluster.kill("A")
    assert reasons(c1conn) == ["worker_failed"]
    assert reasons(w3conn) == ["client_failed"]
    assert not [w for w in cluster.shared.workers.values() if w.node == "A"]
    _, late = cluster.client("B")
    assert isinstance(late.sent[0], Rejected)  # A's idle worker is not handed out
    cluster.assert_consistent()
    del w1, c1, s1, c3conn


def test_a_node_that_dies_before_telling_its_pairing_sends_the_other_back() -> None:
    """The node that paired dies before its word reaches the partner's node
    (with resume on, the word goes after the tokens are written): the
    worker goes back to the pool, the waiting player looks again."""
    cluster = Cluster(resume_grace=5.0, queue_limit=5)
    worker, wconn = cluster.worker("A")
    doomed = cluster.hubs["C"].open_client(FakeConn())
    cluster.hubs["C"].on_message(doomed, f'{{"type":"join","game":"{GAME}"}}')
    cluster.collect("C")
    cluster.step("C")  # paired with A's worker; its start waits behind the tokens
    cluster.kill("C")
    assert not [m for m in wconn.sent if isinstance(m, SessionStart)]
    assert worker.id in cluster.shared.games[GAME].pool  # back, not waiting for good
    cluster.assert_consistent()
    _, cconn = cluster.client("B")
    assert [m for m in wconn.sent if isinstance(m, SessionStart)]  # paired anew
    # The other way round: A pairs its new worker with B's waiting player.
    waiting, waiting_conn = cluster.client("B")
    assert isinstance(waiting_conn.sent[-1], Queued)
    late = cluster.hubs["A"].open_worker(FakeConn())
    cluster.hubs["A"].on_message(late, f'{{"type":"register","game":"{GAME}"}}')
    cluster.collect("A")
    cluster.step("A")  # paired with B's player; its word waits behind the tokens
    cluster.kill("A")
    assert waiting.id in cluster.shared.games[GAME].line  # in line again
    cluster.assert_consistent()
    cluster.worker("B")
    assigned = [m for m in waiting_conn.sent if isinstance(m, Assigned)]
    assert len(assigned) == 1 and waiting.session_id == assigned[0].session_id
    del cconn


def test_a_cut_off_node_ends_what_it_shares_and_refuses_joins() -> None:
    cluster = Cluster()
    w1, w1conn, c1, c1conn, _ = pair_across(cluster)  # A's worker, B's player
    wb, wbconn = cluster.worker("B")
    cb, cbconn = cluster.client("B")  # a session all on B
    assert cb.worker_id == wb.id
    idle, idle_conn = cluster.worker("B")
    cluster.hubs["B"].cut_off()
    cluster.settle()
    assert reasons(c1conn) == ["worker_failed"]  # its worker is out of reach
    assert reasons(idle_conn) == ["server_shutdown"]  # go register elsewhere
    assert reasons(wbconn) == [] and reasons(cbconn) == []  # B alone still serves it
    _, refused = cluster.client("B")
    assert isinstance(refused.sent[0], Rejected)
    assert refused.sent[0].reason == "service_unavailable"
    cluster.hubs["A"].node_down("B")  # the others find it dead, too
    cluster.settle()
    assert reasons(w1conn) == ["client_failed"]
    cluster.hubs["B"].reconnected()
    assert not cluster.hubs["B"].isolated
    cluster.assert_consistent()
    del w1, c1, idle


def test_a_bus_entry_holds_one_message_or_several_in_order() -> None:
    from playcast.signaling.rules import bus

    one = [bus.Up(session_id="s1")]
    several = [
        bus.Relay(session_id="s1", to="c1", frame='{"type":"offer"}'),
        bus.Relay(session_id="s1", to="c1", frame='{"type":"ice_candidate"}'),
        bus.End(session_id="s1", reason="worker_failed"),
    ]
    for msgs in (one, several):
        assert bus.unpack(bus.pack(list(msgs))) == msgs
    assert bus.pack(one)[:1] == b"m" and bus.pack(list(several))[:1] == b"b"
