"""Resume across nodes, under a fake clock: a member may come back on any
node; the node it left hands over what it held; a dead node's members
resume elsewhere; a stopping node sends its members elsewhere."""

from __future__ import annotations

from clusterkit import GAME, Cluster, FakeConn

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    Error,
    IceCandidate,
    Leave,
    Offer,
    Reconnect,
    Resume,
    Resumed,
    SessionStart,
    Shutdown,
    WebrtcConnected,
)
from playcast.signaling.types import Client, Worker

CAND = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")


def playing(
    cluster: Cluster, wnode: str = "A", cnode: str = "B"
) -> tuple[Worker, FakeConn, Client, FakeConn, str, str, str]:
    worker, wconn = cluster.worker(wnode)
    client, cconn = cluster.client(cnode)
    assigned = next(m for m in cconn.sent if isinstance(m, Assigned))
    start = next(m for m in wconn.sent if isinstance(m, SessionStart))
    sid = assigned.session_id
    assert assigned.resume_token and start.resume_token
    cluster.send(wnode, worker, Offer(session_id=sid, sdp="o"))
    cluster.send(cnode, client, Answer(session_id=sid, sdp="a"))
    cluster.send(wnode, worker, WebrtcConnected(session_id=sid))
    cluster.send(cnode, client, WebrtcConnected(session_id=sid))
    wconn.take()
    cconn.take()
    return worker, wconn, client, cconn, sid, start.resume_token, assigned.resume_token


def back(
    cluster: Cluster, node: str, role: str, sid: str, token: str
) -> tuple[Worker | Client, FakeConn]:
    conn = FakeConn()
    hub = cluster.hubs[node]
    peer = hub.open_worker(conn) if role == "worker" else hub.open_client(conn)
    cluster.send(node, peer, Resume(session_id=sid, token=token))
    return peer, conn


def shutdowns(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


def test_a_player_drops_on_b_and_resumes_on_c() -> None:
    cluster = Cluster(resume_grace=10.0)
    worker, wconn, client, cconn, sid, _, ctoken = playing(cluster)
    cluster.close("B", client)
    cluster.send("A", worker, IceCandidate(session_id=sid, candidate=CAND))  # held at B
    assert shutdowns(wconn) == []
    again, conn = back(cluster, "C", "client", sid, ctoken)
    resumed = conn.sent[0]
    assert isinstance(resumed, Resumed) and resumed.resume_token != ctoken
    assert conn.sent[1:] == [IceCandidate(session_id=sid, candidate=CAND)]  # B handed it over
    assert again.id == client.id
    assert sid not in cluster.hubs["B"].sessions  # B let go, without ending it
    assert cluster.hubs["A"].sessions[sid].client_node == "C"
    assert cluster.hubs["C"].sessions[sid].owner and not cluster.hubs["A"].sessions[sid].owner
    cluster.send("A", worker, IceCandidate(session_id=sid, candidate=None))
    assert conn.sent[-1] == IceCandidate(session_id=sid, candidate=None)
    cluster.send("C", again, Leave())
    assert shutdowns(wconn) == ["client_left"]
    cluster.assert_consistent()
    del cconn


def test_a_killed_node_s_members_resume_elsewhere_and_nothing_ends() -> None:
    cluster = Cluster(resume_grace=10.0)
    w1, w1conn, c1, c1conn, s1, w1token, _ = playing(cluster, "A", "B")  # A dies: worker
    w2, w2conn, c2, c2conn, s2, _, c2token = playing(cluster, "C", "A")  # A dies: player
    cluster.kill("A")
    cluster.send("B", c1, IceCandidate(session_id=s1, candidate=CAND))  # held for the worker
    assert shutdowns(c1conn) == [] and shutdowns(w2conn) == []
    w1b, w1new = back(cluster, "C", "worker", s1, w1token)
    assert isinstance(w1new.sent[0], Resumed)
    assert w1new.sent[1:] == [IceCandidate(session_id=s1, candidate=CAND)]
    c2b, c2new = back(cluster, "B", "client", s2, c2token)
    assert isinstance(c2new.sent[0], Resumed)
    cluster.send("C", w2, IceCandidate(session_id=s2, candidate=None))
    assert c2new.sent[-1] == IceCandidate(session_id=s2, candidate=None)
    cluster.advance(
        12.0, pong=[("B", c1, c1conn), ("C", w1b, w1new), ("C", w2, w2conn), ("B", c2b, c2new)]
    )
    assert all(not shutdowns(c) for c in (c1conn, w1new, w2conn, c2new))  # zero ended
    cluster.assert_consistent()
    del w1, w1conn, c2, c2conn


def test_no_resume_within_the_grace_after_a_node_dies() -> None:
    cluster = Cluster(resume_grace=3.0)
    _, _, client, cconn, _, _, _ = playing(cluster, "A", "B")
    cluster.kill("A")
    cluster.advance(2.0, pong=[("B", client, cconn)])
    assert shutdowns(cconn) == []
    cluster.advance(1.5, pong=[("B", client, cconn)])
    assert shutdowns(cconn) == ["worker_failed"]
    cluster.assert_consistent()


def test_a_stopping_node_sends_its_members_elsewhere() -> None:
    cluster = Cluster(resume_grace=10.0)
    worker, wconn, client, cconn, sid, wtoken, _ = playing(cluster, "A", "B")
    idle, idle_conn = cluster.worker("A")
    cluster.hubs["A"].shutdown_all(reconnect=True)
    cluster.settle()
    for conn in (wconn, idle_conn):
        assert isinstance(conn.sent[-1], Reconnect) and conn.closed == (1012, "reconnect")
    assert shutdowns(cconn) == []
    cluster.send("B", client, IceCandidate(session_id=sid, candidate=CAND))  # held at A
    again, conn = back(cluster, "C", "worker", sid, wtoken)
    assert isinstance(conn.sent[0], Resumed)
    assert conn.sent[1:] == [IceCandidate(session_id=sid, candidate=CAND)]
    assert not cluster.hubs["A"].away  # handed over: A may go
    assert cluster.hubs["B"].sessions[sid].worker_node == "C"
    assert idle.id not in cluster.shared.workers  # idle: registers anew elsewhere
    del worker, again


def test_a_wrong_token_is_refused_on_any_node() -> None:
    cluster = Cluster(resume_grace=10.0)
    _, _, client, _, sid, wtoken, ctoken = playing(cluster)
    cluster.close("B", client)
    for node, role, token in (
        ("C", "client", wtoken),
        ("A", "client", "nope"),
        ("C", "worker", ctoken),
    ):
        _, conn = back(cluster, node, role, sid, token)
        assert [m.code for m in conn.sent if isinstance(m, Error)] == ["resume_failed"]
        assert conn.closed is not None and conn.closed[0] == 1008
    _, ok = back(cluster, "C", "client", sid, ctoken)
    assert isinstance(ok.sent[0], Resumed)
    _, reused = back(cluster, "A", "client", sid, ctoken)  # spent
    assert [m.code for m in reused.sent if isinstance(m, Error)] == ["resume_failed"]
    cluster.assert_consistent()


__all__ = ["GAME"]
