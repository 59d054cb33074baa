"""Heartbeats, inactivity, handshake deadlines and every shutdown reason,
under a fake clock (PROTOCOL.md's reason table, row by row)."""

from __future__ import annotations

import pytest
from hubkit import FakeConn, Rig, connected_pair

from playcast.protocol import (
    Answer,
    InactivityWarning,
    Input,
    Leave,
    Offer,
    Ping,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
)
from playcast.signaling.rules.state import SLOTS


def reasons(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


def test_pings_reach_every_connection_once_per_interval_spread_over_ticks() -> None:
    rig = Rig(heartbeat_interval=1.0)
    conns = [FakeConn() for _ in range(50)]
    for i, conn in enumerate(conns):
        if i % 2:
            rig.open_worker(conn)
        else:
            rig.open_client(conn)
        if i % 5 == 0:  # connections arrive between ticks too
            rig.clock.now += rig.hub.tick_interval
            rig.tick()
    for conn in conns:
        conn.take()
    per_tick, total = [], 0
    for _ in range(SLOTS):
        rig.clock.now += rig.hub.tick_interval
        rig.tick()
        now_total = sum(len(c.only(Ping)) for c in conns)
        per_tick.append(now_total - total)
        total = now_total
    assert [len(c.only(Ping)) for c in conns] == [1] * len(conns)  # all, once per interval
    assert max(per_tick) <= len(conns) // 2  # never all in one burst


def test_a_new_connection_is_pinged_within_a_tick() -> None:
    rig = Rig()
    conn = FakeConn()
    rig.open_worker(conn)
    rig.clock.now += rig.hub.tick_interval
    rig.tick()
    assert len(conn.only(Ping)) == 1


def test_live_peers_survive_long_silence_only_if_they_pong() -> None:
    rig = Rig(heartbeat_timeout=3.0)
    worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.send(client, Input(event={}))
    rig.advance(2.5, pong=[(worker, wconn), (client, cconn)])
    assert worker.id in rig.hub.workers and client.id in rig.hub.clients
    assert reasons(wconn) == [] and reasons(cconn) == []


def test_worker_heartbeat_timeout_fails_its_client() -> None:
    rig = Rig(heartbeat_timeout=3.0)
    worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.advance(4.5, pong=[(client, cconn)])
    assert reasons(wconn) == ["heartbeat_timeout"]  # best effort
    assert wconn.closed is not None  # and closed at once: it is dead
    assert reasons(cconn) == ["worker_failed"]
    assert worker.id not in rig.hub.workers
    rig.send(client, ShutdownAck(ok=True, detail=""))
    assert cconn.closed is not None
    rig.assert_consistent()


def test_client_heartbeat_timeout_fails_its_worker() -> None:
    rig = Rig(heartbeat_timeout=3.0)
    worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.advance(4.5, pong=[(worker, wconn)])
    assert reasons(cconn) == ["heartbeat_timeout"]
    assert cconn.closed is not None
    assert reasons(wconn) == ["client_failed"]
    assert client.id not in rig.hub.clients
    rig.assert_consistent()


def test_idle_worker_heartbeat_timeout_is_removed_from_the_pool() -> None:
    rig = Rig(heartbeat_timeout=3.0)
    worker, conn = rig.worker()
    rig.advance(4.5)
    assert worker.id not in rig.hub.workers
    assert not rig.available.get(worker.game)
    assert conn.closed is not None
    _client, cconn = rig.client()
    assert reasons(cconn) == [] and cconn.closed is not None  # rejected: nobody left
    rig.assert_consistent()


def test_any_message_refreshes_last_ping() -> None:
    rig = Rig(heartbeat_timeout=3.0)
    worker, wconn, client, _cconn, _ = connected_pair(rig)
    for _ in range(8):
        rig.advance(0.5, pong=[(worker, wconn)])
        rig.send(client, Input(event={}))  # never pongs, but keeps talking
    assert client.id in rig.hub.clients


def test_worker_disconnect_is_worker_failed_for_its_client() -> None:
    rig = Rig()
    worker, _wconn, _client, cconn, _ = connected_pair(rig)
    rig.on_close(worker)
    assert reasons(cconn) == ["worker_failed"]
    rig.assert_consistent()


def test_client_disconnect_is_client_failed_for_its_worker() -> None:
    rig = Rig()
    worker, wconn, client, _cconn, _ = connected_pair(rig)
    rig.on_close(client)
    assert reasons(wconn) == ["client_failed"]
    assert worker.id not in rig.hub.workers  # shut down, never back in the pool
    rig.assert_consistent()


def test_client_left() -> None:
    rig = Rig()
    _worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.send(client, Leave())
    assert reasons(wconn) == ["client_left"]
    assert reasons(cconn) == [] and cconn.closed is not None


@pytest.mark.parametrize("reporter", ["worker", "client"])
def test_webrtc_failed_during_handshake_is_handshake_failed_for_both(reporter: str) -> None:
    rig = Rig()
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id or ""
    rig.send(worker, Offer(session_id=sid, sdp="o"))
    peer = worker if reporter == "worker" else client
    rig.send(peer, WebrtcFailed(session_id=sid, reason="ice failed"))
    assert reasons(wconn) == ["handshake_failed"]
    assert reasons(cconn) == ["handshake_failed"]
    assert not rig.hub.sessions
    rig.assert_consistent()


def test_webrtc_failed_after_the_handshake_tells_each_side_its_partner_failed() -> None:
    rig = Rig()
    _worker, wconn, client, cconn, sid = connected_pair(rig)
    rig.send(client, WebrtcFailed(session_id=sid, reason="ice disconnected"))
    assert reasons(wconn) == ["client_failed"]
    assert reasons(cconn) == ["worker_failed"]


def test_handshake_timeout_ends_both() -> None:
    rig = Rig(handshake_timeout=5.0, heartbeat_timeout=30.0)
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id or ""
    rig.send(worker, Offer(session_id=sid, sdp="o"))
    rig.send(client, Answer(session_id=sid, sdp="a"))
    rig.send(worker, WebrtcConnected(session_id=sid))  # the client never connects
    rig.advance(4.0)
    assert reasons(wconn) == [] and reasons(cconn) == []
    rig.advance(1.5)
    assert reasons(wconn) == ["handshake_timeout"]
    assert reasons(cconn) == ["handshake_timeout"]
    rig.assert_consistent()


def test_handshake_deadline_is_cleared_once_connected() -> None:
    rig = Rig(handshake_timeout=5.0, heartbeat_timeout=30.0, inactivity_timeout=100.0)
    _worker, wconn, _client, cconn, _ = connected_pair(rig)
    rig.advance(10.0)
    assert reasons(wconn) == [] and reasons(cconn) == []


def test_inactivity_warns_once_per_idle_spell_then_times_out_both() -> None:
    rig = Rig(inactivity_timeout=20.0, inactivity_warning=5.0, heartbeat_timeout=100.0)
    _worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.advance(14.0)
    assert cconn.only(InactivityWarning) == []
    rig.advance(2.0)
    (warning,) = cconn.only(InactivityWarning)
    assert 3.0 <= warning.seconds_left <= 5.0
    rig.send(client, Input(event={"type": "touch"}))  # the player is back
    cconn.take()
    rig.advance(16.0)
    assert len(cconn.only(InactivityWarning)) == 1  # a new spell, a new warning
    rig.advance(5.0)
    assert reasons(cconn) == ["inactivity_timeout"]
    assert reasons(wconn) == ["inactivity_timeout"]
    assert wconn.only(InactivityWarning) == []  # warnings are the player's
    rig.assert_consistent()


def test_inactivity_clock_runs_from_join_even_before_connected() -> None:
    rig = Rig(inactivity_timeout=10.0, handshake_timeout=100.0, heartbeat_timeout=100.0)
    _worker, _wconn = rig.worker()
    _client, cconn = rig.client()
    rig.advance(11.0)
    assert reasons(cconn) == ["inactivity_timeout"]


def test_warning_zero_turns_warnings_off() -> None:
    rig = Rig(inactivity_timeout=10.0, inactivity_warning=0.0, heartbeat_timeout=100.0)
    _worker, _wconn, _client, cconn, _ = connected_pair(rig)
    rig.advance(11.0)
    assert cconn.only(InactivityWarning) == []
    assert reasons(cconn) == ["inactivity_timeout"]


def test_missing_shutdown_ack_closes_at_the_deadline() -> None:
    rig = Rig(shutdown_ack_timeout=2.0, heartbeat_timeout=100.0)
    _worker, wconn, client, _cconn, _ = connected_pair(rig)
    rig.send(client, Leave())
    rig.advance(1.5)
    assert wconn.closed is None
    rig.advance(1.0)
    assert wconn.closed == (1000, "no shutdown_ack")
    assert not rig.hub.closing
    assert rig.hub.counters.shutdown_acks.get("missing") == 1


def test_server_shutdown_reaches_everyone_idle_included() -> None:
    rig = Rig()
    _worker, wconn, _client, cconn, _ = connected_pair(rig)
    _idle, iconn = rig.worker()
    waiting_conn = FakeConn()
    rig.open_client(waiting_conn)  # connected, never joined
    registering_conn = FakeConn()
    rig.open_worker(registering_conn)
    rig.shutdown_all()
    for conn in (wconn, cconn, iconn, waiting_conn, registering_conn):
        assert reasons(conn) == ["server_shutdown"]
    assert not rig.hub.workers and not rig.hub.clients and not rig.hub.sessions
    assert len(rig.hub.closing) == 5
    rig.assert_consistent()


def test_message_flood_closes_with_1008_and_fails_the_partner() -> None:
    rig = Rig(max_message_rate=10.0, max_message_burst=20.0)
    _worker, wconn, client, cconn, _ = connected_pair(rig)
    for _ in range(25):
        rig.send(client, Input(event={}))
    assert cconn.closed is not None and cconn.closed[0] == 1008
    assert reasons(wconn) == ["client_failed"]
    assert rig.hub.counters.rate_limit_closes.get("client") == 1
    rig.assert_consistent()


def test_an_honest_rate_is_never_limited() -> None:
    rig = Rig(max_message_rate=10.0, max_message_burst=20.0, heartbeat_timeout=100.0)
    _worker, _wconn, client, cconn, _ = connected_pair(rig)
    for _ in range(200):  # 8 a second for 25 s
        rig.clock.now += 0.125
        rig.send(client, Input(event={}))
    assert cconn.closed is None


def test_error_flood_closes_with_1008() -> None:
    rig = Rig(max_error_rate=1.0, max_error_burst=5.0)
    worker, wconn, _client, cconn, _ = connected_pair(rig)
    for _ in range(7):
        rig.send(worker, "junk")
    assert len(wconn.sent) == 5  # five answers, then the door
    assert wconn.closed is not None and wconn.closed[0] == 1008
    assert reasons(cconn) == ["worker_failed"]


def test_slow_consumer_is_closed_and_its_partner_told() -> None:
    rig = Rig()
    _worker, wconn, client, cconn, _ = connected_pair(rig)
    rig.slow_consumer(client)
    assert cconn.closed is not None and cconn.closed[0] == 1008
    assert reasons(wconn) == ["client_failed"]
    rig.assert_consistent()


def test_drained_once_the_last_peer_acks_or_times_out() -> None:
    rig = Rig(shutdown_ack_timeout=2.0)
    _worker, _wconn, client, _cconn, _ = connected_pair(rig)
    assert not rig.hub.drained
    rig.shutdown_all()
    rig.send(client, ShutdownAck(ok=True, detail=""))
    assert not rig.hub.drained  # the worker has not answered yet
    rig.advance(2.5)  # ... and never will: closed at its deadline
    assert rig.hub.drained


def test_drained_at_once_with_nobody_connected() -> None:
    rig = Rig()
    rig.shutdown_all()
    assert rig.hub.drained
