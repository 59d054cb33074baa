"""The outbound queue's rules (``outbound.py``), on a fake clock: what a
batch takes, and when it may go."""

from __future__ import annotations

from playcast.signaling.cluster.outbound import BATCH, LINGER, Outbound, Raw
from playcast.signaling.rules import bus
from playcast.signaling.shared.records import ClientEntry, EndSession, Pair, Withdraw

GATHER = 0.003
END = bus.End(session_id="s1", reason="client_left")
UP = bus.Up(session_id="s1")
OFFER = bus.Relay(session_id="s2", to="w2", frame="{}", kind="offer")
START = bus.Start(
    session_id="s3", worker_id="w3", client_id="c3", client_node="B", codec="VP8", ice_servers=[]
)


def pair(n: int = 1) -> Pair:
    return Pair(ClientEntry(f"c{n}", "B", "g", ("VP8",)), f"s{n}", 0, 0.0)


def test_nothing_queued_is_never_due() -> None:
    out = Outbound(GATHER)
    assert not out and out.due(5.0) is None
    assert out.take(5.0).ops == [] and out.due(5.0) is None


def test_what_is_waited_for_goes_at_once_but_a_busy_node_gathers() -> None:
    out = Outbound(GATHER)
    out.add([pair(1)], [], 10.0)
    assert out.due(10.0) == 10.0  # idle: no wait at all
    assert out.take(10.0).ops == [pair(1)]
    out.add([pair(2)], [("A", OFFER)], 10.001)
    assert out.due(10.001) == 10.0 + GATHER  # busy: one round trip per window
    out.add([pair(3)], [], 10.002)  # what comes meanwhile rides along
    batch = out.take(10.0 + GATHER)
    assert batch.ops == [pair(2), pair(3)] and batch.tells == {"A": [OFFER]}
    assert not out


def test_what_nobody_waits_for_lingers_then_goes() -> None:
    out = Outbound(GATHER)
    out.add([EndSession("s1", "w1"), Withdraw("w2")], [("A", END)], 1.0)
    # Withdraw is not among what may wait: the batch is due now.
    assert out.due(1.0) == 1.0
    out = Outbound(GATHER)
    out.add([EndSession("s1", "w1")], [("A", END), ("A", UP)], 1.0)
    assert out.due(1.0) == 1.0 + LINGER
    out.add([], [("C", UP)], 1.002)
    assert out.due(1.002) == 1.0 + LINGER  # the oldest decides
    batch = out.take(1.0 + LINGER)
    assert batch.ops == [EndSession("s1", "w1")]
    assert batch.tells == {"A": [END, UP]}  # C's has not waited LINGER yet
    # C's goes when it has waited LINGER, and a window after this batch.
    assert out.due(1.0 + LINGER) == max(1.002 + LINGER, 1.0 + LINGER + GATHER)


def test_a_node_s_lingering_messages_ride_with_one_waited_for_in_order() -> None:
    out = Outbound(0.0)
    out.add([], [("A", END), ("C", END)], 1.0)
    out.add([], [("A", OFFER)], 1.001)
    assert out.due(1.001) == 1.001
    batch = out.take(1.001)
    assert batch.tells == {"A": [END, OFFER]}  # one push to A, in order; C's waits
    assert out.tells == {"C": [END]} and out.since == {"C": 1.0}


def test_a_start_told_already_may_linger() -> None:
    spared = {"s3"}
    out = Outbound(0.0, spare=lambda m: isinstance(m, bus.Start) and m.session_id in spared)
    out.add([], [("A", START)], 1.0)
    assert out.due(1.0) == 1.0 + LINGER
    spared.clear()
    out.add([], [("A", START)], 1.0)
    assert out.due(1.0) == 1.0


def test_numbered_entries_go_at_once_and_take_their_node_s_messages() -> None:
    out = Outbound(GATHER)
    out.add([], [("A", END)], 1.0)
    out.add_raw(Raw("A", b"again"))
    assert out.due(1.0) == 1.0
    batch = out.take(1.0)
    assert batch.raws == [Raw("A", b"again")] and batch.tells == {"A": [END]}


def test_a_failed_batch_goes_back_first_and_is_waited_for() -> None:
    out = Outbound(GATHER)
    out.add([EndSession("s2")], [], 1.0)
    out.put_back([EndSession("s1")], [Raw("A", b"1")])
    out.add_raw(Raw("A", b"2"))
    assert out.due(1.0) == 1.0
    batch = out.take(1.0)
    assert batch.ops == [EndSession("s1"), EndSession("s2")]
    assert batch.raws == [Raw("A", b"1"), Raw("A", b"2")]


def test_hurry_sends_everything_with_the_next_batch() -> None:
    out = Outbound(GATHER)
    out.add([EndSession("s1")], [("A", END), ("C", UP)], 1.0)
    out.hurry()
    assert out.due(1.0) == 1.0
    batch = out.take(1.0)
    assert batch.tells == {"A": [END], "C": [UP]} and not out


def test_a_batch_takes_at_most_batch_operations_and_the_rest_is_due() -> None:
    out = Outbound(GATHER)
    out.add([EndSession(f"s{i}") for i in range(BATCH + 3)], [], 1.0)
    assert len(out.take(1.0).ops) == BATCH
    assert len(out.ops) == 3 and out.due(1.0) == 1.0 + GATHER


def test_messages_wait_for_the_operations_queued_before_them() -> None:
    # An End told after its EndSession: published first, its worker would
    # stay in the directory if this node died before the next batch.
    out = Outbound(GATHER)
    out.add([EndSession(f"s{i}") for i in range(BATCH + 1)], [("A", END), ("B", OFFER)], 1.0)
    first = out.take(1.0)
    assert len(first.ops) == BATCH and not first.tells
    assert out.due(1.0) == 1.0 + GATHER
    second = out.take(1.0 + GATHER)
    assert len(second.ops) == 1 and second.tells == {"B": [OFFER]}  # the End may linger
    assert out.tells == {"A": [END]}


def test_cut_off_keeps_only_what_is_refused_later() -> None:
    out = Outbound(GATHER)
    out.add([pair(1), EndSession("s1")], [("A", OFFER)], 1.0)
    out.add_raw(Raw("A", b"x"))
    out.keep_only(lambda op: isinstance(op, Pair))
    assert out.ops == [pair(1)] and not out.tells and not out.raws and not out.pressing
    out.keep_only(lambda op: False)
    assert not out and out.due(1.0) is None
