"""An operator's drain and restart (issue 26) on a lone server, under a fake
clock: a drained name's idle worker leaves the pool at once, a busy one
plays its session out and comes back held; undrained, it is paired again;
a restarted worker is shut down, its player told its worker failed."""

from __future__ import annotations

import json

from hubkit import FakeConn, Rig, connected_pair

from playcast.protocol import (
    Assigned,
    Error,
    Leave,
    Queued,
    Register,
    Registered,
    Resume,
    Resumed,
    SessionStart,
    Shutdown,
    ShutdownAck,
)

GAME = "com.supercell.clashroyale"


def reasons(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


def drain(rig: Rig, name: str, on: bool = True) -> None:
    rig.hub.hold(name, on)
    rig.flush()


def test_the_name_is_in_the_status_and_the_shared_directory() -> None:
    rig = Rig()
    worker, _ = rig.worker(name="R58M123ABC")
    unnamed, _ = rig.worker()
    doc = rig.hub.snapshot()
    assert [(w["id"], w["name"]) for w in doc["workers"]] == [
        (worker.id, "R58M123ABC"),
        (unnamed.id, None),
    ]
    assert rig.cluster.shared.workers[worker.id].name == "R58M123ABC"


def test_draining_an_idle_worker_takes_it_out_of_the_pool_until_undrained() -> None:
    rig = Rig(queue_limit=5)
    worker, wconn = rig.worker(name="phone-1")
    other, _ = rig.worker(name="phone-2")
    drain(rig, "phone-1")
    assert (worker.status, other.status) == ("held", "available")
    assert list(rig.available[GAME]) == [other.id]
    rig.assert_consistent()
    first, _ = rig.client()
    assert first.worker_id == other.id
    second, sconn = rig.client()
    assert sconn.sent == [Queued(position=1, game=GAME)]  # not the held one
    assert not wconn.only(SessionStart) and not wconn.only(Shutdown)
    assert rig.hub.snapshot()["workers"][0]["status"] == "held"

    drain(rig, "phone-1", on=False)
    assert worker.status == "busy" and second.worker_id == worker.id
    assert sconn.only(Assigned)[0].worker_id == worker.id
    rig.assert_consistent()


def test_a_drained_busy_worker_finishes_its_session_then_comes_back_held() -> None:
    rig = Rig(queue_limit=5)
    worker, wconn, client, cconn, sid = connected_pair(rig, "phone-1")
    drain(rig, "phone-1")
    # The session goes on untouched: nobody is told anything.
    assert worker.status == "busy" and rig.hub.sessions[sid].phase == "connected"
    assert (wconn.sent, cconn.sent) == ([], [])
    rig.advance(30.0, pong=[(worker, wconn), (client, cconn)])
    assert reasons(wconn) == [] and reasons(cconn) == []

    rig.send(client, Leave())
    assert reasons(wconn) == ["client_left"]
    rig.send(worker, ShutdownAck(ok=True, detail="closed"))
    # It restarts and registers again, a new id under the same name: held.
    again, aconn = rig.worker(name="phone-1")
    assert aconn.only(Registered) and again.status == "held"
    waiting, wait_conn = rig.client()
    assert wait_conn.sent == [Queued(position=1, game=GAME)]
    assert not aconn.only(SessionStart)
    rig.assert_consistent()

    drain(rig, "phone-1", on=False)
    assert waiting.worker_id == again.id and aconn.only(SessionStart)
    rig.assert_consistent()


def test_a_held_worker_that_disconnects_leaves_nothing_held_behind() -> None:
    rig = Rig()
    worker, _ = rig.worker(name="phone-1")
    drain(rig, "phone-1")
    assert rig.cluster.shared.holds == {"phone-1": {worker.id}}
    rig.on_close(worker, 1006)
    assert rig.cluster.shared.holds == {"phone-1": set()}
    assert worker.id not in rig.cluster.shared.workers
    rig.assert_consistent()


def test_restarting_an_idle_worker_shuts_it_down() -> None:
    rig = Rig()
    worker, wconn = rig.worker(name="phone-1")
    rig.hub.restart_worker(worker.id, rig.hub.node)
    rig.flush()
    assert reasons(wconn) == ["server_shutdown"]
    assert rig.available[GAME] == {} and worker.id not in rig.hub.workers
    rig.send(worker, ShutdownAck(ok=True, detail="idle"))
    assert wconn.closed is not None
    rig.assert_consistent()


def test_restarting_a_busy_worker_tells_its_player_it_failed() -> None:
    rig = Rig()
    worker, wconn, _, cconn, sid = connected_pair(rig, "phone-1")
    rig.hub.restart_worker(worker.id, rig.hub.node)
    rig.flush()
    assert reasons(wconn) == ["server_shutdown"] and reasons(cconn) == ["worker_failed"]
    assert sid not in rig.hub.sessions
    rig.assert_consistent()


def test_restarting_a_worker_away_gives_its_session_up() -> None:
    rig = Rig(resume_grace=30.0)
    worker, _, _, cconn, sid = connected_pair(rig, "phone-1")
    rig.on_close(worker, 1006)
    assert worker.id in rig.hub.away
    rig.hub.restart_worker(worker.id, rig.hub.node)
    rig.flush()
    assert reasons(cconn) == ["worker_failed"] and sid not in rig.hub.sessions
    rig.assert_consistent()


def test_restarting_a_worker_nobody_holds_does_nothing() -> None:
    rig = Rig()
    worker, wconn = rig.worker(name="phone-1")
    rig.hub.restart_worker("w-gone", rig.hub.node)
    rig.flush()
    assert [type(m) for m in wconn.sent] == [Registered] and worker.status == "available"
    client, _ = rig.client()
    assert client.worker_id == worker.id


def test_a_register_with_a_bad_name_is_answered_and_registers_nothing() -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, json.dumps({"type": "register", "game": GAME, "name": "my phone"}))
    (error,) = conn.sent
    assert isinstance(error, Error) and error.code == "bad_message" and "name" in error.message
    assert worker.status == "registering" and conn.closed is None and not rig.available[GAME]
    rig.send(worker, Register(game=GAME, name="my-phone"))
    assert worker.status == "available" and worker.name == "my-phone"


def test_a_worker_that_resumes_keeps_its_name_and_can_be_drained_by_it() -> None:
    rig = Rig(resume_grace=30.0)
    worker, wconn = rig.worker(name="phone-1")
    client, cconn = rig.client()
    start = next(m for m in wconn.sent if isinstance(m, SessionStart))
    assert start.resume_token and client.session_id == start.session_id
    rig.on_close(worker, 1006)
    conn = FakeConn()
    back = rig.open_worker(conn)
    rig.send(back, Resume(session_id=start.session_id, token=start.resume_token))
    assert isinstance(conn.sent[0], Resumed) and back.id == worker.id
    assert back.name == "phone-1"
    assert rig.hub.snapshot()["workers"][0]["name"] == "phone-1"
    drain(rig, "phone-1")
    assert back.status == "busy" and reasons(conn) == [] and reasons(cconn) == []
