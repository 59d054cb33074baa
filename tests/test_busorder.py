"""The cluster bus's numbering (busorder): in order, nothing lost, nothing twice."""

from __future__ import annotations

import random

import pytest

from playcast.signaling.cluster.busorder import KEEP, Ask, Entry, Inbox, Outbox, parse


def delivered(inbox: Inbox, data: bytes, now: float = 0.0) -> tuple[list[bytes], Ask | None]:
    return inbox.receive(parse(data), now)


def test_an_entry_reads_back_as_written() -> None:
    out = Outbox("node A", "e1")  # a node id may hold spaces
    data = out.stamp("B", b"m{}")
    assert parse(data) == Entry(1, "e1.1", "node A", b"m{}")
    assert parse(out.control("B", b"b[]")) == Entry(0, "e1.1", "node A", b"b[]")


@pytest.mark.parametrize("data", [b"", b"1 e A", b"x e A\nm{}", b"1 e\nm{}", b"\xff\xfe\nm"])
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse(data)


def test_in_order_once_each() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    first, second = out.stamp("B", b"one"), out.stamp("B", b"two")
    assert delivered(inbox, first) == ([b"one"], None)
    assert delivered(inbox, first) == ([], None)  # sent again: dropped
    assert delivered(inbox, second) == ([b"two"], None)


def test_a_gap_is_held_asked_about_and_filled_in_order() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    entries = [out.stamp("B", b"%d" % i) for i in range(1, 5)]
    assert delivered(inbox, entries[0]) == ([b"1"], None)
    held, ask = delivered(inbox, entries[2], now=10.0)  # 2 was missed
    assert held == [] and ask == Ask("A", 1, "e.1")
    assert delivered(inbox, entries[3], now=10.1) == ([], None)  # asked already
    assert inbox.waiting() == 2
    lost, again = out.resend("B", ask.after, ask.epoch)
    assert lost == 0 and again == entries[1:]
    bodies = [b for data in again for b in delivered(inbox, data)[0]]
    assert bodies == [b"2", b"3", b"4"] and inbox.waiting() == 0


def test_an_open_gap_is_asked_again_after_a_while() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    out.stamp("B", b"1")
    _, ask = delivered(inbox, out.stamp("B", b"2"), now=5.0)
    assert ask == Ask("A", 0, "e.1")
    assert inbox.overdue(5.1) == []
    assert inbox.overdue(5.6) == [Ask("A", 0, "e.1")]
    assert inbox.overdue(5.7) == []


def test_what_the_sender_no_longer_holds_is_skipped() -> None:
    out, inbox = Outbox("A", "e", keep=2), Inbox()
    entries = [out.stamp("B", b"%d" % i) for i in range(1, 6)]
    _, ask = delivered(inbox, entries[4])
    assert ask is not None
    lost, again = out.resend("B", ask.after, ask.epoch)
    assert lost == 3 and again == entries[3:]
    assert inbox.lost("A", "e.1", lost) == []
    assert [b for data in again for b in delivered(inbox, data)[0]] == [b"4", b"5"]


def test_a_receiver_forgotten_hears_a_new_numbering() -> None:
    out = Outbox("A", "e")
    old = Inbox()
    for i in range(3):
        delivered(old, out.stamp("B", b"%d" % i))
    out.forget("B")  # B was found dead; a new process runs under its id
    assert out.resend("B", 0, "") == (0, [])
    fresh = out.stamp("B", b"new")
    assert parse(fresh).seq == 1
    assert delivered(Inbox(), fresh) == ([b"new"], None)
    # Even a receiver that kept the old numbering takes it as a new one.
    assert delivered(old, fresh) == ([b"new"], None)


def test_a_stray_entry_of_another_numbering_changes_nothing() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    first, second = out.stamp("B", b"1"), out.stamp("B", b"2")
    delivered(inbox, first)
    bodies, ask = delivered(inbox, b"7 x.1 A\nstray", now=1.0)
    assert bodies == [] and ask == Ask("A", 1, "e.1")  # asked about what it knows
    assert out.resend("B", ask.after, ask.epoch) == (0, [second])
    assert delivered(inbox, second, now=1.1) == ([b"2"], None)
    assert delivered(inbox, first, now=1.2) == ([], None)  # never twice


def test_a_new_numbering_whose_start_was_missed_is_sent_whole() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    delivered(inbox, out.stamp("B", b"old"))
    out.forget("B")  # A found B dead and forgot it; B lived on
    lost_first, then = out.stamp("B", b"1"), out.stamp("B", b"2")
    del lost_first  # missed
    bodies, ask = delivered(inbox, then, now=1.0)
    assert bodies == [] and ask == Ask("A", 1, "e.1")
    lost, again = out.resend("B", ask.after, ask.epoch)  # another numbering: all of it
    assert lost == 0 and [parse(d).seq for d in again] == [1, 2]
    assert [b for d in again for b in delivered(inbox, d, now=1.1)[0]] == [b"1", b"2"]


def test_a_resync_asks_every_sender_and_every_live_node() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    first = out.stamp("B", b"1")
    delivered(inbox, first)
    assert inbox.resync({"A", "C"}, 0.0) == [Ask("A", 1, "e.1"), Ask("C", 0, "")]
    # A sender asked about a numbering it does not know sends all it holds.
    assert out.resend("B", 0, "") == (0, [first])


def test_a_resync_unanswered_is_asked_again_and_an_answer_shows_a_lost_tail() -> None:
    out, inbox = Outbox("A", "e"), Inbox()
    delivered(inbox, out.stamp("B", b"1"))
    tail = out.stamp("B", b"2")  # lost while B's subscription was down: no later entry
    (ask,) = inbox.resync({"A"}, now=1.0)
    assert inbox.overdue(1.2) == []
    assert inbox.overdue(1.6) == [ask]  # the ask itself was lost: asked again
    lost, again = out.resend("B", ask.after, ask.epoch)
    assert (lost, again) == (0, [tail]) and out.last("B") == 2
    assert delivered(inbox, tail) == ([b"2"], None)
    assert inbox.upto("A", "e.1", out.last("B"), now=1.7) is None  # complete
    assert inbox.overdue(5.0) == []
    # An answer showing more than came: what it sent again was lost again.
    out.stamp("B", b"3")
    assert inbox.upto("A", "e.1", 3, now=6.0) == Ask("A", 2, "e.1")
    # A node that never sent this one anything answers with 0: nothing to do.
    assert inbox.upto("C", "x.1", 0, now=6.0) is None


def test_random_losses_and_doubles_still_deliver_everything_once_in_order() -> None:
    rng = random.Random(12)
    out, inbox = Outbox("A", "e"), Inbox()
    sent = [b"%d" % i for i in range(2000)]
    got: list[bytes] = []
    now = 0.0
    for body in sent:
        data = out.stamp("B", body)
        now += 0.01
        if rng.random() < 0.1:
            continue  # lost on the way
        copies = 2 if rng.random() < 0.05 else 1
        for _ in range(copies):
            bodies, gap = inbox.receive(parse(data), now)
            got += bodies
            for ask in ([gap] if gap else []) + inbox.overdue(now):
                lost, again = out.resend("B", ask.after, ask.epoch)
                assert lost == 0
                for d in again:
                    got += inbox.receive(parse(d), now)[0]
    for ask in inbox.resync(set(), now):  # the last ones lost are found on a resync
        for d in out.resend("B", ask.after, ask.epoch)[1]:
            got += inbox.receive(parse(d), now)[0]
    assert got == sent


def test_keep_bounds_what_a_sender_holds() -> None:
    out = Outbox("A", "e")
    for i in range(KEEP + 5):
        out.stamp("B", b"%d" % i)
    lost, again = out.resend("B", 0, "e.1")
    assert lost == 5 and len(again) == KEEP
