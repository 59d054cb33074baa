"""Drain and restart across nodes (issue 26), under a fake clock: an operator
on one node, the worker on another, its player on a third. A hold is the
shared state's, so it holds wherever the worker registers again; a word
about it that a later one overtook changes nothing (each moved worker is
offered again, and the shared state's answer decides)."""

from __future__ import annotations

from clusterkit import GAME, Cluster, FakeConn

from playcast.protocol import (
    Answer,
    Assigned,
    Leave,
    Offer,
    Queued,
    Registered,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
)


def reasons(conn: FakeConn) -> list[str]:
    return [m.reason for m in conn.sent if isinstance(m, Shutdown)]


def pooled(cluster: Cluster) -> list[str]:
    return list(cluster.shared.games[GAME].pool)


def test_drained_on_a_the_idle_worker_on_b_is_held_and_back_when_undrained_on_c() -> None:
    cluster = Cluster(queue_limit=5)
    worker, wconn = cluster.worker("B", name="phone-1")
    cluster.hubs["A"].hold("phone-1", True)
    cluster.settle()
    assert worker.status == "held" and pooled(cluster) == []
    cluster.assert_consistent()
    client, cconn = cluster.client("C")
    assert cconn.sent == [Queued(position=1, game=GAME)]

    cluster.hubs["C"].hold("phone-1", False)
    cluster.settle()
    assert worker.status == "busy" and client.worker_id == worker.id
    assert wconn.only(SessionStart) and cconn.only(Assigned)
    cluster.assert_consistent()


def test_a_busy_worker_drained_elsewhere_plays_on_and_registers_again_held() -> None:
    cluster = Cluster()
    worker, wconn = cluster.worker("B", name="phone-1")
    client, cconn = cluster.client("C")
    sid = client.session_id
    assert sid is not None
    cluster.send("B", worker, Offer(session_id=sid, sdp="o"))
    cluster.send("C", client, Answer(session_id=sid, sdp="a"))
    cluster.send("B", worker, WebrtcConnected(session_id=sid))
    cluster.send("C", client, WebrtcConnected(session_id=sid))
    wconn.take()
    cconn.take()

    cluster.hubs["A"].hold("phone-1", True)
    cluster.settle()
    assert worker.status == "busy" and (wconn.sent, cconn.sent) == ([], [])
    cluster.send("C", client, Leave())
    assert reasons(wconn) == ["client_left"]
    cluster.send("B", worker, ShutdownAck(ok=True, detail="closed"))
    # Its next life may register on any node: held there too.
    again, aconn = cluster.worker("A", name="phone-1")
    assert aconn.only(Registered) and again.status == "held"
    _, late = cluster.client("B")
    assert [type(m) for m in late.sent] == [Rejected]
    cluster.assert_consistent()


def test_drain_and_undrain_overtaking_each_other_end_as_the_shared_state_says() -> None:
    """On from A and off from C, their words to B in either order: B offers
    its worker again each time, and ends as the last hold left it."""
    for first, second, held in (("A", "C", False), ("C", "A", True)):
        cluster = Cluster()
        worker, _ = cluster.worker("B", name="phone-1")
        if first == "C":  # held already, so that releasing it moves it
            cluster.hubs["A"].hold("phone-1", True)
            cluster.settle()
        cluster.hubs[first].hold("phone-1", first == "A")
        cluster.hubs[second].hold("phone-1", second == "A")
        cluster.collect(first)
        cluster.collect(second)
        cluster.step(first)  # the shared state runs first's hold, then second's
        cluster.step(second)
        cluster.settle()  # B hears both, in whichever order the bus brings them
        assert worker.status == ("held" if held else "available"), (first, second)
        assert pooled(cluster) == ([] if held else [worker.id])
        cluster.assert_consistent()


def test_restarted_from_a_the_busy_worker_on_b_goes_and_its_player_on_c_hears_it() -> None:
    cluster = Cluster()
    worker, wconn = cluster.worker("B", name="phone-1")
    client, cconn = cluster.client("C")
    assert client.worker_id == worker.id
    cluster.hubs["A"].restart_worker(worker.id, "B")
    cluster.settle()
    assert reasons(wconn) == ["server_shutdown"] and reasons(cconn) == ["worker_failed"]
    assert all(not hub.sessions for hub in cluster.hubs.values())
    idle, iconn = cluster.worker("C", name="phone-2")
    cluster.hubs["A"].restart_worker(idle.id, "C")
    cluster.settle()
    assert reasons(iconn) == ["server_shutdown"] and pooled(cluster) == []
    cluster.assert_consistent()


def test_a_cut_off_node_sends_its_held_workers_away_too() -> None:
    cluster = Cluster()
    worker, wconn = cluster.worker("B", name="phone-1")
    cluster.hubs["A"].hold("phone-1", True)
    cluster.settle()
    assert worker.status == "held"
    cluster.hubs["B"].cut_off()
    cluster.settle()
    assert reasons(wconn) == ["server_shutdown"]
