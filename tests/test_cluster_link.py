"""The cluster layer's own bookkeeping, without Redis: the early start a
pairing script publishes, and what a pairing whose answer was lost leaves
behind."""

from __future__ import annotations

from hubkit import FakeConn, Rig

from playcast.protocol import Join, Rejected
from playcast.signaling import bus
from playcast.signaling.busorder import parse
from playcast.signaling.cluster import ClusterLink
from playcast.signaling.shared import Pair


def joined() -> tuple[Rig, ClusterLink, FakeConn, Pair]:
    rig = Rig(redis="memory://", node_id="B")
    conn = FakeConn()
    client = rig.open_client(conn)
    rig.send(client, Join())
    link = ClusterLink(rig.hub, rig.flush, "redis://127.0.0.1:1/0")  # never connected
    link.submit()
    (pair,) = link.outbound
    assert isinstance(pair, Pair)
    return rig, link, conn, pair


def test_the_early_start_is_the_start_the_worker_node_would_be_told() -> None:
    _, link, _, pair = joined()
    parts = link._early_start(pair)
    assert parts is not None
    head, middle, tail = parts
    # What the Pair script publishes for worker w-7 paired with codec VP8:
    entry = parse(head + b"w-7" + middle + b"VP8" + tail)
    assert (entry.seq, entry.sender) == (0, "B")  # a control: delivered at once
    (start,) = bus.unpack(entry.body)
    assert start == bus.Start(
        session_id=pair.session_id,
        worker_id="w-7",
        client_id=pair.client.id,
        client_node="B",
        codec="VP8",
        ice_servers=[],
    )


def test_no_early_start_with_resume_on() -> None:
    rig = Rig(redis="memory://", node_id="B", resume_grace=5.0)
    link = ClusterLink(rig.hub, rig.flush, "redis://127.0.0.1:1/0")
    conn = FakeConn()
    rig.send(rig.open_client(conn), Join())
    link.submit()
    (pair,) = link.outbound
    assert isinstance(pair, Pair) and link._early_start(pair) is None


def test_a_pairing_whose_answer_was_lost_ends_its_session_wherever_it_started() -> None:
    """Sent with an early start, its answer lost with the link: it may have
    paired and told a worker's node. The player is refused, and every node
    known is told to end that session (a node that never opened it ignores
    it), so no worker is left greeted for a player who is gone."""
    _, link, conn, pair = joined()
    link.known = {"A", "C"}
    assert link._early_start(pair) is not None
    link.outbound.clear()
    link._requeue([pair])
    end = bus.End(session_id=pair.session_id, reason="client_failed")
    assert list(link.outbound) == [("A", end), ("C", end)]
    assert [m.reason for m in conn.sent if isinstance(m, Rejected)] == ["service_unavailable"]
