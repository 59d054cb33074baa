"""Resume (--resume-grace) under a fake clock: a dropped socket is not the
end of the game; the token is the only way back, once, and only in time."""

from __future__ import annotations

import pytest
from hubkit import FakeConn, Rig, connected_pair

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    Error,
    IceCandidate,
    Input,
    Offer,
    Ping,
    Registered,
    Resume,
    Resumed,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
)
from playcast.signaling.types import Client, Worker

CAND = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")


def resumable(rig: Rig) -> tuple[Worker, FakeConn, Client, FakeConn, str, str, str]:
    """A connected pair, with each member's resume token."""
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    start = next(m for m in wconn.sent if isinstance(m, SessionStart))
    assigned = next(m for m in cconn.sent if isinstance(m, Assigned))
    assert start.resume_token and assigned.resume_token
    assert assigned.resume_grace == rig.hub.settings.resume_grace
    registered = next(m for m in wconn.sent if isinstance(m, Registered))
    assert registered.resume_grace == rig.hub.settings.resume_grace
    sid = assigned.session_id
    from hubkit import connected_pair as _  # noqa: F401  (same handshake as elsewhere)

    rig.send(worker, Offer(session_id=sid, sdp="o"))
    rig.send(client, Answer(session_id=sid, sdp="a"))
    rig.send(worker, WebrtcConnected(session_id=sid))
    rig.send(client, WebrtcConnected(session_id=sid))
    wconn.take()
    cconn.take()
    return worker, wconn, client, cconn, sid, start.resume_token, assigned.resume_token


def come_back(rig: Rig, role: str, sid: str, token: str) -> tuple[Worker | Client, FakeConn]:
    conn = FakeConn()
    peer = rig.open_worker(conn) if role == "worker" else rig.open_client(conn)
    rig.send(peer, Resume(session_id=sid, token=token))
    return peer, conn


def refused(conn: FakeConn) -> bool:
    errors = [m for m in conn.sent if isinstance(m, Error)]
    return (
        [e.code for e in errors] == ["resume_failed"]
        and conn.closed is not None
        and conn.closed[0] == 1008
    )


def test_no_tokens_without_a_grace() -> None:
    rig = Rig()
    _, wconn = rig.worker()
    _, cconn = rig.client()
    assert next(m for m in cconn.sent if isinstance(m, Assigned)).resume_token is None
    assert next(m for m in wconn.sent if isinstance(m, SessionStart)).resume_token is None


@pytest.mark.parametrize("role", ["client", "worker"])
def test_a_dropped_member_resumes_and_gets_what_it_missed(role: str) -> None:
    rig = Rig(resume_grace=5.0)
    worker, wconn, client, cconn, sid, wtoken, ctoken = resumable(rig)
    gone, stays = (client, worker) if role == "client" else (worker, client)
    stays_conn = wconn if role == "client" else cconn
    rig.on_close(gone, 1006)
    assert not [m for m in stays_conn.sent if isinstance(m, Shutdown)]  # told nothing
    rig.assert_consistent()  # an away member is its session's, not gone
    # The partner goes on; what it sends is held for the away member.
    held = [
        IceCandidate(session_id=sid, candidate=CAND),
        IceCandidate(session_id=sid, candidate=None),
    ]
    for msg in held:
        rig.send(stays, msg)
    rig.advance(2.0, pong=[(stays, stays_conn)])
    assert rig.hub.sessions[sid].phase == "connected"
    back, conn = come_back(rig, role, sid, ctoken if role == "client" else wtoken)
    resumed = conn.sent[0]
    assert isinstance(resumed, Resumed) and resumed.session_id == sid
    assert resumed.resume_token not in (wtoken, ctoken)
    assert conn.sent[1:] == held
    assert back.id == gone.id  # the same member, on a new socket
    assert not [m for m in stays_conn.sent if isinstance(m, Shutdown)]
    rig.assert_consistent()
    # It goes on as before: input counts, pings reach the new socket.
    if role == "client":
        rig.send(back, Input(event={}))
    rig.advance(1.0, pong=[(stays, stays_conn), (back, conn)])
    assert back.last_ping >= rig.clock.now - 1.0
    assert rig.metrics.sample("playcast_resume_events_total", {"event": "resumed"}) == 1.0


@pytest.mark.parametrize(
    ("role", "partner_reason"), [("client", "client_failed"), ("worker", "worker_failed")]
)
def test_no_resume_within_the_grace_ends_the_session_as_today(
    role: str, partner_reason: str
) -> None:
    rig = Rig(resume_grace=3.0, heartbeat_timeout=10.0)
    worker, wconn, client, cconn, sid, wtoken, ctoken = resumable(rig)
    gone, stays, stays_conn = (
        (client, worker, wconn) if role == "client" else (worker, client, cconn)
    )
    rig.on_close(gone, 1006)
    rig.advance(2.5, pong=[(stays, stays_conn)])
    assert sid in rig.hub.sessions
    rig.advance(1.0, pong=[(stays, stays_conn)])
    assert [m.reason for m in stays_conn.sent if isinstance(m, Shutdown)] == [partner_reason]
    assert sid not in rig.hub.sessions and not rig.hub.away
    _, late = come_back(rig, role, sid, ctoken if role == "client" else wtoken)
    assert refused(late)  # too late
    rig.assert_consistent()


def test_tokens_are_spent_bound_to_one_member_and_one_session() -> None:
    rig = Rig(resume_grace=5.0)
    w1, w1conn, c1, c1conn, s1, w1token, c1token = resumable(rig)
    w2, w2conn, c2, c2conn, s2, w2token, c2token = resumable(rig)
    rig.on_close(c1, 1006)
    attempts = [
        ("client", s1, c2token),  # another session's token
        ("client", s1, w1token),  # the partner's token
        ("worker", s1, c1token),  # the right token on the wrong endpoint
        ("client", s2, c1token),  # the right token, another session
        ("client", "s-nope", c1token),  # no such session
        ("client", s1, "x" * 32),  # a guess
    ]
    for role, sid, token in attempts:
        _, conn = come_back(rig, role, sid, token)
        assert refused(conn), (role, sid, token, conn.sent)
    _, ok = come_back(rig, "client", s1, c1token)
    assert isinstance(ok.sent[0], Resumed)
    rig.on_close(rig.hub.clients[c1.id], 1006)
    _, reused = come_back(rig, "client", s1, c1token)  # the old token is spent
    assert refused(reused)
    # Nobody else's session was touched by any of it.
    assert s2 in rig.hub.sessions and not [m for m in c2conn.sent if isinstance(m, Shutdown)]
    assert rig.metrics.sample("playcast_resume_events_total", {"event": "refused"}) == 7.0
    rig.assert_consistent()
    del w1, w1conn, c1conn, w2, w2conn, c2, w2token


def test_a_flood_of_resume_attempts_is_refused_one_by_one() -> None:
    rig = Rig(resume_grace=5.0)
    _, _, client, _, sid, _, ctoken = resumable(rig)
    rig.on_close(client, 1006)
    for i in range(200):
        _, conn = come_back(rig, "client", sid, f"guess-{i}")
        assert refused(conn)
    _, ok = come_back(rig, "client", sid, ctoken)
    assert isinstance(ok.sent[0], Resumed)
    assert len(rig.hub.clients) == 1
    rig.assert_consistent()


def test_resume_must_come_first() -> None:
    rig = Rig(resume_grace=5.0)
    _, _, client, cconn, sid, _, ctoken = resumable(rig)
    rig.send(client, Resume(session_id=sid, token=ctoken))
    err = cconn.sent[-1]
    assert isinstance(err, Error) and err.code == "unexpected_message"
    assert cconn.closed is None


def test_the_token_holder_wins_over_a_half_open_socket() -> None:
    rig = Rig(resume_grace=5.0)
    _, wconn, client, cconn, sid, _, ctoken = resumable(rig)
    back, conn = come_back(rig, "client", sid, ctoken)  # the old socket never closed
    assert isinstance(conn.sent[0], Resumed)
    assert cconn.closed == (1000, "resumed on another socket")
    rig.on_close(client, 1000)  # the old socket's close, late: changes nothing
    assert rig.hub.clients[client.id] is back
    assert not [m for m in wconn.sent if isinstance(m, Shutdown)]
    rig.assert_consistent()


def test_the_sessions_own_clocks_run_while_a_member_is_away() -> None:
    rig = Rig(resume_grace=30.0, inactivity_timeout=4.0, inactivity_warning=0.0)
    worker, wconn, client, _, sid, _, _ = resumable(rig)
    rig.on_close(client, 1006)
    rig.advance(5.0, pong=[(worker, wconn)])
    assert [m.reason for m in wconn.sent if isinstance(m, Shutdown)] == ["inactivity_timeout"]
    assert sid not in rig.hub.sessions and not rig.hub.away
    rig.assert_consistent()


def test_a_silent_connected_socket_is_still_dead() -> None:
    rig = Rig(resume_grace=30.0)
    worker, wconn, client, cconn, sid, _, _ = resumable(rig)
    rig.advance(4.0, pong=[(worker, wconn)])  # the client never pongs
    assert [m.reason for m in cconn.sent if isinstance(m, Shutdown)] == ["heartbeat_timeout"]
    assert [m.reason for m in wconn.sent if isinstance(m, Shutdown)] == ["client_failed"]
    del client, sid


def test_a_server_stop_forgets_the_away_members() -> None:
    rig = Rig(resume_grace=30.0)
    worker, wconn, client, _, _, _, _ = resumable(rig)
    rig.on_close(client, 1006)
    rig.shutdown_all()
    rig.send(worker, ShutdownAck(ok=True, detail=""))
    assert rig.hub.drained and not rig.hub.away and not rig.hub.waiting_for
    del wconn


def test_pings_follow_the_member_to_its_new_socket() -> None:
    rig = Rig(resume_grace=5.0)
    worker, wconn, client, cconn, sid, _, ctoken = resumable(rig)
    rig.on_close(client, 1006)
    back, conn = come_back(rig, "client", sid, ctoken)
    rig.advance(1.0)
    assert any(isinstance(m, Ping) for m in conn.sent)
    assert not any(isinstance(m, Ping) for m in cconn.sent)
    del worker, wconn, back


def test_connected_pair_helper_still_works_without_resume() -> None:
    rig = Rig()
    connected_pair(rig)
    rig.assert_consistent()


def test_a_resume_keeps_the_players_inactivity_clock() -> None:
    """Only input resets the inactivity clock (the seed): a player who
    reconnects every few seconds without playing must not hold a worker for
    ever. Resuming every 2 s with no input, the session ends for inactivity
    when the 6 s since the last input are up, not 6 s after the last resume."""
    rig = Rig(resume_grace=5.0, inactivity_timeout=6.0, inactivity_warning=0.0)
    worker, wconn, client, _, sid, _, ctoken = resumable(rig)
    rig.send(client, Input(event={"t": 1}))
    last_input = rig.clock.now
    player: Worker | Client = client
    while rig.clock.now - last_input < 6.0 and sid in rig.hub.sessions:
        rig.on_close(player, 1006)
        player, conn = come_back(rig, "client", sid, ctoken)
        resumed = conn.sent[0]
        assert isinstance(resumed, Resumed)
        ctoken = resumed.resume_token
        rig.advance(2.0, pong=[(worker, wconn), (player, conn)])
    rig.advance(1.0, pong=[(worker, wconn)])
    assert sid not in rig.hub.sessions
    ends = [m for m in wconn.sent if isinstance(m, Shutdown)]
    assert [m.reason for m in ends] == ["inactivity_timeout"]
    assert rig.clock.now - last_input <= 6.0 + 1.0 + rig.hub.tick_interval
