"""The protocol core's rules under a fake clock: pairing, handshake, errors."""

from __future__ import annotations

import json

import pytest
from hubkit import FakeConn, Rig, connected_pair

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    Error,
    IceCandidate,
    Input,
    Join,
    Leave,
    Offer,
    Ping,
    Pong,
    Register,
    Registered,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
)

GAME = "com.supercell.clashroyale"


def test_register_makes_an_available_worker() -> None:
    rig = Rig()
    worker, conn = rig.worker()
    (reply,) = conn.sent
    assert reply == Registered(worker_id=worker.id, heartbeat_interval=1.0, heartbeat_timeout=3.0)
    assert worker.status == "available"
    assert worker.game == GAME
    assert (worker.addr, worker.port) == ("10.0.0.9", 5555)  # the socket's, by default
    assert list(rig.available[GAME]) == [worker.id]
    rig.assert_consistent()


def test_register_addr_and_port_override_the_socket() -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, Register(game=GAME, addr="192.0.2.7", port=9000))
    assert (worker.addr, worker.port) == ("192.0.2.7", 9000)


def test_worker_first_message_must_be_register_and_socket_stays_open() -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, Offer(session_id="s1", sdp="v=0"))
    assert conn.sent == [Error(code="not_registered", message=conn.only(Error)[0].message)]
    assert conn.closed is None
    assert worker.status == "registering"
    rig.send(worker, Register(game=GAME))
    assert isinstance(conn.last(), Registered)


def test_pong_is_accepted_before_register_and_join() -> None:
    rig = Rig()
    wconn, cconn = FakeConn(), FakeConn()
    worker = rig.open_worker(wconn)
    client = rig.open_client(cconn)
    rig.send(worker, Pong(ts=1.0))
    rig.send(client, Pong(ts=1.0))
    assert wconn.sent == [] and cconn.sent == []


def test_client_first_message_must_be_join() -> None:
    rig = Rig()
    conn = FakeConn()
    client = rig.open_client(conn)
    rig.send(client, Input(event={"type": "touch"}))
    (err,) = conn.sent
    assert isinstance(err, Error) and err.code == "not_registered"
    assert conn.closed is None and client.connection_state == "waiting"


def test_client_is_paired_with_the_longest_available_worker_of_its_game() -> None:
    rig = Rig()
    w1, _ = rig.worker()
    other, _ = rig.worker(game="com.example.other")
    w2, _ = rig.worker()
    c1, c1conn = rig.client()
    c2, _ = rig.client()
    c3, _ = rig.client(game="com.example.other")
    assert (c1.worker_id, c2.worker_id, c3.worker_id) == (w1.id, w2.id, other.id)
    assigned = c1conn.only(Assigned)[0]
    assert assigned.worker_id == w1.id and assigned.client_id == c1.id
    assert w1.status == "busy" and w1.client_id == c1.id
    assert c1.connection_state == "connecting"
    rig.assert_consistent()


def test_session_start_carries_ice_servers() -> None:
    from playcast.protocol import IceServer

    ice = (IceServer(urls=["turn:turn.example.org:3478"], username="u", credential="p"),)
    rig = Rig(ice_servers=ice)
    _, wconn = rig.worker()
    _, cconn = rig.client()
    assert wconn.only(SessionStart)[0].ice_servers == list(ice)
    assert cconn.only(Assigned)[0].ice_servers == list(ice)


def test_no_worker_rejects_and_closes_the_client() -> None:
    rig = Rig()
    rig.worker(game="com.example.other")
    client, conn = rig.client()
    (rejected,) = conn.sent
    assert isinstance(rejected, Rejected) and rejected.reason == "no_worker_available"
    assert "try again" in rejected.message
    assert conn.closed is not None
    assert client.id not in rig.hub.clients
    rig.assert_consistent()


def test_full_handshake_relays_each_step_to_the_partner_only() -> None:
    rig = Rig()
    _bystander_w, bw_conn = rig.worker()
    bystander_c, bc_conn = rig.client()
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id
    assert sid and sid != bystander_c.session_id
    bw_conn.take()
    bc_conn.take()
    cconn.take()
    wconn.take()

    rig.send(worker, Offer(session_id=sid, sdp="offer-sdp"))
    assert cconn.take() == [Offer(session_id=sid, sdp="offer-sdp")]
    cand = Candidate(candidate="candidate:1 1 udp 1 10.0.0.1 9 typ host", sdp_mid="0")
    rig.send(worker, IceCandidate(session_id=sid, candidate=cand))
    assert cconn.take() == [IceCandidate(session_id=sid, candidate=cand)]
    rig.send(client, Answer(session_id=sid, sdp="answer-sdp"))
    assert wconn.take() == [Answer(session_id=sid, sdp="answer-sdp")]
    rig.send(client, IceCandidate(session_id=sid, candidate=cand))
    rig.send(client, IceCandidate(session_id=sid, candidate=None))
    assert wconn.take() == [
        IceCandidate(session_id=sid, candidate=cand),
        IceCandidate(session_id=sid, candidate=None),
    ]
    rig.send(worker, WebrtcConnected(session_id=sid))
    assert client.connection_state == "connecting"
    rig.send(client, WebrtcConnected(session_id=sid))
    assert client.connection_state == "connected"
    assert rig.hub.sessions[sid].phase == "connected"
    assert bw_conn.sent == [] and bc_conn.sent == []  # nothing leaked to the other session
    rig.assert_consistent()


def test_relay_wire_format_keeps_the_browser_field_names() -> None:
    rig = Rig()
    worker, _ = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id
    raw = {
        "type": "ice_candidate",
        "session_id": sid,
        "candidate": {"candidate": "candidate:x", "sdpMid": "0", "sdpMLineIndex": 0},
    }
    rig.send(worker, Offer(session_id=sid or "", sdp="o"))
    rig.send(worker, json.dumps(raw))
    from playcast.protocol import encode

    assert json.loads(encode(cconn.last())) == raw


@pytest.mark.parametrize(
    "step",
    ["answer_before_offer", "candidate_before_offer", "connected_before_answer", "offer_twice"],
)
def test_handshake_steps_out_of_order_are_unexpected(step: str) -> None:
    rig = Rig()
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id or ""
    wconn.take()
    cconn.take()
    if step == "answer_before_offer":
        peer, conn, msg = client, cconn, Answer(session_id=sid, sdp="a")
    elif step == "candidate_before_offer":
        peer, conn, msg = client, cconn, IceCandidate(session_id=sid, candidate=None)
    elif step == "connected_before_answer":
        rig.send(worker, Offer(session_id=sid, sdp="o"))
        wconn.take()
        peer, conn, msg = worker, wconn, WebrtcConnected(session_id=sid)
    else:
        rig.send(worker, Offer(session_id=sid, sdp="o"))
        wconn.take()
        peer, conn, msg = worker, wconn, Offer(session_id=sid, sdp="o")
    cconn.take()
    rig.send(peer, msg)
    (err,) = conn.take()
    assert isinstance(err, Error) and err.code == "unexpected_message"
    other = cconn if conn is wconn else wconn
    assert other.sent == []
    rig.assert_consistent()


def test_wrong_session_id_reaches_nobody() -> None:
    rig = Rig()
    w1, w1conn = rig.worker()
    _w2, w2conn = rig.worker()
    _c1, c1conn = rig.client()
    c2, c2conn = rig.client()
    for conn in (w1conn, w2conn, c1conn, c2conn):
        conn.take()
    # Worker 1 tries to write into client 2's session.
    rig.send(w1, Offer(session_id=c2.session_id or "", sdp="evil"))
    (err,) = w1conn.take()
    assert isinstance(err, Error) and err.code == "unexpected_message"
    assert c2conn.sent == [] and c1conn.sent == [] and w2conn.sent == []


@pytest.mark.parametrize(
    ("role", "msg"),
    [
        ("worker", Join()),
        ("worker", Input(event={})),
        ("worker", Leave()),
        ("worker", Answer(session_id="s", sdp="a")),
        ("client", Register(game=GAME)),
        ("client", Offer(session_id="s", sdp="o")),
        ("client", Ping(ts=1.0)),
        ("worker", ShutdownAck(ok=True, detail="")),
        ("client", Join()),
        ("worker", Register(game=GAME)),
    ],
)
def test_messages_of_the_other_role_or_state_are_unexpected(role: str, msg: object) -> None:
    rig = Rig()
    rig.worker()  # spare, so the client gets a session
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    peer, conn = (worker, wconn) if role == "worker" else (client, cconn)
    conn.take()
    rig.send(peer, msg)  # type: ignore[arg-type]
    (err,) = conn.sent
    assert isinstance(err, Error) and err.code == "unexpected_message"
    assert conn.closed is None


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '"text"',
        '{"no_type": 1}',
        '{"type": "teleport"}',
        '{"type": "register"}',
        '{"type": "register", "game": 7}',
        '{"type": "register", "game": ""}',
        '{"type": "register", "game": "g", "port": 70000}',
        '{"type": "pong", "ts": "soon"}',
        '{"type": 5}',
    ],
)
def test_malformed_frames_are_bad_messages_and_the_socket_stays(frame: str) -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, frame)
    (err,) = conn.sent
    assert isinstance(err, Error) and err.code == "bad_message"
    assert err.message
    assert conn.closed is None and worker.id in rig.hub.workers


def test_binary_frames_are_bad_messages() -> None:
    rig = Rig()
    conn = FakeConn()
    client = rig.open_client(conn)
    rig.on_message(client, b'{"type":"join"}')
    (err,) = conn.sent
    assert isinstance(err, Error) and err.code == "bad_message"


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, json.dumps({"type": "register", "game": GAME, "gpu": "none"}))
    assert isinstance(conn.last(), Registered)


def test_input_is_accepted_in_every_state_after_join_and_discarded() -> None:
    rig = Rig()
    _worker, wconn = rig.worker()
    client, cconn = rig.client()
    cconn.take()
    wconn.take()
    rig.clock.now += 5
    rig.send(client, Input(event={"type": "touch", "x": 0.5}))
    assert client.last_input == rig.clock.now
    assert cconn.sent == [] and wconn.sent == []  # not relayed, not answered


def test_shutdown_ack_closes_the_socket() -> None:
    rig = Rig()
    worker, wconn, client, cconn, _sid = connected_pair(rig)
    rig.send(client, Leave())
    assert cconn.closed is not None
    shutdown = wconn.only(Shutdown)[0]
    assert shutdown.reason == "client_left"
    assert wconn.closed is None
    rig.send(worker, ShutdownAck(ok=True, detail="reset done"))
    assert wconn.closed == (1000, "shutdown acknowledged")
    assert not rig.hub.closing
    rig.assert_consistent()


def test_messages_after_shutdown_are_unexpected_but_pong_is_fine() -> None:
    rig = Rig()
    worker, wconn, client, _cconn, sid = connected_pair(rig)
    rig.send(client, Leave())
    wconn.take()
    rig.send(worker, Pong(ts=1.0))
    assert wconn.sent == []
    rig.send(worker, IceCandidate(session_id=sid, candidate=None))
    (err,) = wconn.sent
    assert isinstance(err, Error) and err.code == "unexpected_message"


def test_frames_after_a_rejection_or_close_are_ignored() -> None:
    rig = Rig()
    client, conn = rig.client()  # rejected: no workers
    assert conn.closed is not None
    rig.send(client, Join())  # still in flight when the socket closed
    rig.send(client, "junk")
    assert len(conn.sent) == 1  # just the rejection
    rig.assert_consistent()


def test_shutdown_ack_before_register_or_join_is_not_registered() -> None:
    rig = Rig()
    wconn, cconn = FakeConn(), FakeConn()
    worker = rig.open_worker(wconn)
    client = rig.open_client(cconn)
    rig.send(worker, ShutdownAck(ok=True, detail=""))
    rig.send(client, ShutdownAck(ok=True, detail=""))
    for conn in (wconn, cconn):
        (err,) = conn.sent
        assert isinstance(err, Error) and err.code == "not_registered"


def test_input_while_shutting_down_is_accepted_silently() -> None:
    rig = Rig()
    _worker, _wconn, client, cconn, _sid = connected_pair(rig)
    rig.shutdown_all()
    cconn.take()
    rig.send(client, Input(event={"type": "touch"}))
    assert cconn.sent == []
    rig.send(client, ShutdownAck(ok=True, detail=""))
    assert cconn.closed is not None
