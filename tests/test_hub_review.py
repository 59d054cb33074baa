"""The defects an outside review of the core found, each pinned by a test."""

from __future__ import annotations

import pytest
from hubkit import FakeConn, Rig, connected_pair

from playcast.protocol import (
    Answer,
    Candidate,
    Error,
    IceCandidate,
    Join,
    Offer,
    Ping,
    Pong,
    Register,
    Rejected,
    Shutdown,
    ShutdownAck,
)
from playcast.signaling.rules import heartbeat
from playcast.signaling.types import Client

GAME = "com.supercell.clashroyale"


def sample(rig: Rig, name: str, **labels: str) -> float | None:
    value = rig.metrics.sample(name, labels)
    return value


def shutdowns(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


# 1. One peer raising inside a sweep tick no longer skips the rest of it.


def test_a_peer_that_raises_in_the_sweep_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(handshake_timeout=2.0)
    # Opened in the same tick: all in one heartbeat slot.
    worker, wconn, bad, badconn, _ = connected_pair(rig)
    other_w, other_wconn = rig.worker()
    other_c, other_cconn = rig.client()
    assert other_c.session_id is not None
    assert len({p.slot for p in (worker, bad, other_w, other_c)}) == 1
    real = heartbeat._check_inactivity

    def broken(state: object, client: Client, now: float) -> bool:
        if client is bad:
            raise RuntimeError("a bug")
        return real(state, client, now)  # type: ignore[arg-type]

    monkeypatch.setattr(heartbeat, "_check_inactivity", broken)
    rig.clock.now += 2.5  # past the other session's handshake deadline
    for _ in range(10):  # one whole round of slots
        rig.tick()
    # The faulty client is closed with 1011 and its worker told...
    assert badconn.closed is not None and badconn.closed[0] == 1011
    assert shutdowns(wconn) == ["client_failed"]
    # ... while the rest of its slot was still pinged ...
    assert any(isinstance(m, Ping) for m in other_wconn.sent)
    # ... and the tick's deadlines still ran.
    assert shutdowns(other_cconn) == ["handshake_timeout"]
    assert sample(rig, "playcast_internal_errors_total", where="sweep") == 1.0
    rig.assert_consistent()


def test_a_rule_that_raises_on_a_message_closes_only_that_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig()
    worker, wconn, client, cconn, sid = connected_pair(rig)
    from playcast.signaling.rules import sessions as handshake

    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(handshake, "relay_candidate", broken)
    rig.send(client, IceCandidate(session_id=sid, candidate=None))
    assert cconn.closed is not None and cconn.closed[0] == 1011
    assert shutdowns(wconn) == ["client_failed"]
    assert sample(rig, "playcast_internal_errors_total", where="message") == 1.0
    rig.assert_consistent()
    del worker


def test_both_members_timing_out_in_one_tick_are_told_once() -> None:
    rig = Rig()
    _w, wconn, _c, cconn, _ = connected_pair(rig)
    rig.advance(4.0)  # nobody pongs
    assert len(shutdowns(wconn)) == 1 and len(shutdowns(cconn)) == 1
    rig.assert_consistent()


# 5. A peer that connects while the server drains is told server_shutdown.


@pytest.mark.parametrize("role", ["worker", "client"])
def test_a_peer_opened_while_draining_is_shut_down(role: str) -> None:
    rig = Rig()
    rig.worker()
    rig.shutdown_all()
    conn = FakeConn()
    peer = rig.open_worker(conn) if role == "worker" else rig.open_client(conn)
    assert shutdowns(conn) == ["server_shutdown"]
    assert not rig.hub.drained
    rig.send(peer, ShutdownAck(ok=True, detail=""))
    assert conn.closed == (1000, "shutdown acknowledged")
    rig.advance(3.0)  # the first worker never acks
    assert rig.hub.drained


# 6. Only the allowed games make state.


def test_a_worker_for_an_unknown_game_is_refused_and_leaves_no_state() -> None:
    rig = Rig(games=(GAME,))
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, Register(game="com.example.invented"))
    (err,) = conn.sent
    assert isinstance(err, Error) and err.code == "unknown_game"
    assert GAME in err.message
    assert conn.closed is not None and conn.closed[0] == 1008
    assert set(rig.available) == {GAME}
    assert not rig.hub.workers
    assert sample(rig, "playcast_registrations_total", game="com.example.invented") is None
    rig.assert_consistent()


def test_a_client_for_an_unknown_game_is_rejected() -> None:
    rig = Rig(games=(GAME,))
    rig.worker()
    client, conn = rig.client(game="com.example.invented")
    (rejected,) = conn.sent
    assert isinstance(rejected, Rejected) and rejected.reason == "unknown_game"
    assert conn.closed is not None and conn.closed[0] == 1000
    assert set(rig.available) == {GAME} and len(rig.available[GAME]) == 1
    assert sample(rig, "playcast_rejections_total", reason="unknown_game") == 1.0
    del client


# 7. A socket that never says who it is is closed.


@pytest.mark.parametrize("role", ["worker", "client"])
def test_no_hello_in_time_is_closed_with_1008(role: str) -> None:
    rig = Rig(hello_timeout=2.0, heartbeat_timeout=30.0)
    conn = FakeConn()
    peer = rig.open_worker(conn) if role == "worker" else rig.open_client(conn)
    rig.send(peer, Pong(ts=rig.clock.now))  # a pong is not a hello
    rig.worker()  # a client that joins needs a worker to stay
    greeted, _ = rig.worker() if role == "worker" else rig.client()
    rig.advance(1.9)
    assert conn.closed is None
    rig.advance(0.5)
    assert conn.closed == (1008, "no register or join in time")
    assert peer.id not in rig.hub.workers and peer.id not in rig.hub.clients
    assert sample(rig, "playcast_hello_timeouts_total", role=role) == 1.0
    assert greeted.id in rig.hub.workers or greeted.id in rig.hub.clients
    rig.assert_consistent()


# What the mutation run found unpinned: the figures the hub reports.


def test_heartbeat_rtt_is_observed_from_the_pong() -> None:
    rig = Rig()
    worker, _ = rig.worker()
    rig.send(worker, Pong(ts=rig.clock.now - 0.25))
    assert sample(rig, "playcast_heartbeat_rtt_seconds_count") == 1.0
    assert sample(rig, "playcast_heartbeat_rtt_seconds_sum") == pytest.approx(0.25)
    rig.send(worker, Pong(ts=rig.clock.now + 5))  # from the future: not a round trip
    assert sample(rig, "playcast_heartbeat_rtt_seconds_count") == 1.0


def test_handshake_time_and_candidate_counts_are_reported() -> None:
    rig = Rig()
    worker, _ = rig.worker()
    client, _ = rig.client()
    sid = client.session_id
    assert sid is not None
    cand = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")
    rig.send(worker, Offer(session_id=sid, sdp="o"))
    for _ in range(3):
        rig.send(worker, IceCandidate(session_id=sid, candidate=cand))
    rig.send(client, IceCandidate(session_id=sid, candidate=cand))
    rig.send(client, Answer(session_id=sid, sdp="a"))
    session = rig.hub.sessions[sid]
    assert (session.worker_candidates, session.client_candidates) == (3, 1)
    rig.clock.now += 0.4
    from playcast.protocol import WebrtcConnected

    rig.send(worker, WebrtcConnected(session_id=sid))
    rig.send(client, WebrtcConnected(session_id=sid))
    assert sample(rig, "playcast_handshake_seconds_count") == 1.0
    assert sample(rig, "playcast_handshake_seconds_sum") == pytest.approx(0.4)


def test_status_reports_ages() -> None:
    rig = Rig()
    worker, _ = rig.worker()
    client, _ = rig.client()
    rig.clock.now += 1.5
    rig.send(worker, Pong(ts=rig.clock.now))
    rig.clock.now += 0.5
    doc = rig.hub.snapshot()
    (w,) = doc["workers"]
    (c,) = doc["clients"]
    assert w["last_ping_age"] == pytest.approx(0.5)
    assert c["last_ping_age"] == pytest.approx(2.0)
    assert c["idle_for"] == pytest.approx(2.0)
    assert doc["sessions"][0]["age"] == pytest.approx(2.0)
    del client


def test_join_before_any_worker_then_a_second_join_is_unexpected() -> None:
    rig = Rig()
    client, conn = rig.client()
    assert isinstance(conn.sent[0], Rejected)
    rig.send(client, Join())  # after the close: nothing more is said
    assert len(conn.sent) == 1
