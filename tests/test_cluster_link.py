"""The cluster layer's own bookkeeping, without Redis: the early start a
pairing script publishes (``earlystart``), and what a pairing whose answer
was lost leaves behind."""

from __future__ import annotations

from hubkit import FakeConn, Rig

from playcast.protocol import Join, Register, Registered, Rejected, SessionStart
from playcast.signaling.cluster.busorder import parse
from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.outbound import LINGER
from playcast.signaling.rules import bus
from playcast.signaling.shared.records import (
    EndSession,
    Listed,
    Pair,
    Paired,
    Publish,
    SessionEntry,
    WorkerEntry,
)
from playcast.signaling.types import Worker


def joined(**settings: float) -> tuple[ClusterLink, FakeConn, Pair]:
    """A player joined on node B; the Pair its node sends, not yet sent."""
    rig = Rig(redis="memory://", node_id="B", **settings)
    conn = FakeConn()
    rig.send(rig.open_client(conn), Join())
    link = ClusterLink(rig.hub, rig.flush, "redis://127.0.0.1:1/0")  # never connected
    link.submit()
    (pair,) = link.out.ops
    assert isinstance(pair, Pair)
    return link, conn, pair


def start_for(pair: Pair) -> bus.Start:
    return bus.Start(
        session_id=pair.session_id,
        worker_id="w-7",
        client_id=pair.client.id,
        client_node="B",
        codec="VP8",
        ice_servers=[],
    )


def test_the_early_start_is_the_start_the_worker_node_would_be_told() -> None:
    link, _, pair = joined()
    parts = link.early.template(pair, link.outbox)
    assert parts is not None
    head, middle, tail = parts
    # What the Pair script publishes for worker w-7 paired with codec VP8:
    entry = parse(head + b"w-7" + middle + b"VP8" + tail)
    assert (entry.seq, entry.sender) == (0, "B")  # a control: delivered at once
    assert bus.unpack(entry.body) == [start_for(pair)]


def test_no_early_start_with_resume_on() -> None:
    link, _, pair = joined(resume_grace=5.0)
    assert link.early.template(pair, link.outbox) is None


def test_the_worker_node_feeds_its_core_the_first_start_and_the_player_node_holds() -> None:
    link, _, pair = joined()
    early = link.early
    assert early.template(pair, link.outbox) is not None
    start = start_for(pair)
    assert early.first(start) and not early.first(start)  # the second copy is dropped
    # The worker's node answered before this node read the pairing: held.
    offer = bus.Relay(session_id=pair.session_id, to=pair.client.id, frame="{}", kind="offer")
    assert early.hold(offer)
    assert not early.hold(bus.Up(session_id="another"))
    entry = SessionEntry(pair.session_id, "w-7", "A", pair.client.id, "B", "g", "VP8", 0.0)
    outcome = Paired(entry, WorkerEntry("w-7", "A", "g", ("VP8",), "", 0), pair.client)
    assert early.answered(pair, outcome) == [offer]  # for the core, after the answer
    assert early.spare(start)  # the core's own Start may linger now
    early.sending(start)
    assert not early.spare(start)
    assert not early.hold(offer)  # answered: nothing more is held


def test_a_pairing_whose_answer_was_lost_ends_its_session_wherever_it_started() -> None:
    """Sent with an early start, its answer lost with the link: it may have
    paired and told a worker's node. The player is refused, and every node
    known is told to end that session (a node that never opened it ignores
    it), so no worker is left greeted for a player who is gone."""
    link, conn, pair = joined()
    link.liveness.known = {"A", "C"}
    assert link.early.template(pair, link.outbox) is not None
    link.out.ops.clear()
    link._requeue([pair], [])
    end = bus.End(session_id=pair.session_id, reason="client_failed")
    assert not link.out.ops and link.out.tells == {"A": [end], "C": [end]}
    assert [m.reason for m in conn.sent if isinstance(m, Rejected)] == ["service_unavailable"]


def test_what_may_wait_rides_with_a_push_its_node_waits_for() -> None:
    """A session's end for node A lingers until a message for A that is
    waited for goes (then both go, in order: one push), or LINGER has
    passed; an operation goes with the next round trip whatever it holds.
    (The link's own queue, no gathering: the rules alone are in
    test_outbound.py.)"""
    link, _, pair = joined(cluster_gather=0.0)
    out = link.out
    assert out.due(0.0) == 0.0  # the join, waited for: due at once
    assert out.take(0.0).ops == [pair] and not out
    hub = link.hub
    end = bus.End(session_id="s1", reason="client_left")
    offer = bus.Relay(session_id="s2", to="w2", frame="{}", kind="offer")
    answer = bus.Relay(session_id="s3", to="c3", frame="{}", kind="answer")
    hub.tell("A", end)
    hub.request(EndSession("s1", "w1"))
    link.submit()
    now = out.since["A"]
    assert out.due(now) == now + LINGER  # nothing here is waited for
    batch = out.take(now)
    assert batch.ops == [EndSession("s1", "w1")] and not batch.tells  # A's word stays
    hub.tell("C", answer)
    link.submit()
    assert out.due(now) == now
    assert out.take(now).tells == {"C": [answer]}  # a push to C: not to A
    hub.tell("A", offer)
    link.submit()
    assert out.take(now).tells == {"A": [end, offer]}
    hub.tell("A", end)
    link.submit()
    since = out.since["A"]
    assert out.take(since + LINGER / 2).tells == {}
    assert out.take(since + LINGER).tells == {"A": [end]}  # waited long enough
    assert not out


def registering() -> tuple[Rig, Worker, FakeConn, Publish, bus.Start]:
    """A worker registered on node A, its listing asked of the shared state
    and not yet answered; the early start of a player on B paired with it."""
    rig = Rig(redis="memory://", node_id="A")
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, Register(game="com.supercell.clashroyale"))
    (publish,) = rig.hub.take_requests()
    assert isinstance(publish, Publish)
    start = bus.Start(
        session_id="s-9",
        worker_id=worker.id,
        client_id="c-9",
        client_node="B",
        codec="H264",
        ice_servers=[],
    )
    return rig, worker, conn, publish, start


def test_an_early_start_that_overtakes_the_listing_waits_for_registered() -> None:
    """The pairing script took the worker as soon as it was listed, and its
    push reached A before the listing's answer (two connections): the worker
    is told ``registered`` first, then ``session_start``, never the other
    way round (a worker ignores a session before it is registered)."""
    rig, _, conn, publish, start = registering()
    rig.hub.on_bus(start)
    rig.flush()
    assert not conn.only(Registered) and not conn.only(SessionStart)
    rig.hub.on_outcome(publish, Listed())
    rig.flush()
    told = [m for m in conn.sent if isinstance(m, Registered | SessionStart)]
    assert [type(m) for m in told] == [Registered, SessionStart]
    assert told[1].session_id == "s-9"


def test_a_held_start_for_a_worker_gone_meanwhile_fails_its_player() -> None:
    rig, worker, _, publish, start = registering()
    rig.hub.on_bus(start)
    rig.hub.on_close(worker, 1006)
    rig.flush()
    rig.hub.take_tells()
    rig.hub.on_outcome(publish, Listed())
    assert ("B", bus.End(session_id="s-9", reason="worker_failed")) in rig.hub.take_tells()
    assert not rig.hub.held_starts
