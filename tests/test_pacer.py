"""The pacer (worker/pacer.py) and the keyframe gate (worker/keyframe_gate.py)
under a fake clock: what leaves for the player never outruns 1.2x the target
over any window, a keyframe is spread, retransmissions wait behind media and
are dropped when not worth sending, and keyframe requests faster than a
keyframe crosses the link are merged."""

from __future__ import annotations

import math

import pytest

from playcast.worker.keyframe_gate import ANSWER_TIMEOUT, KeyframeGate
from playcast.worker.pacer import FACTOR, MAX_WAIT, Pacer, seq_before

TARGET = 500_000
MTU = 1200


def send_media(pacer: Pacer, now: float, packets: int, size: int = MTU) -> list[float]:
    """Push ``packets`` through the bucket as the sender does; when each left."""
    times = []
    for _ in range(packets):
        now += pacer.delay(now)
        pacer.charge(now, size)
        times.append(now)
    return times


def test_a_keyframe_is_spread_at_1_2_times_the_target() -> None:
    pacer = Pacer(TARGET, now=0.0)
    times = send_media(pacer, 0.0, 50)  # a 60 kB keyframe
    # The first couple leave at once (the burst), the rest at the bucket's pace.
    assert times[1] == 0.0
    sent_bits = 8 * MTU * 50
    assert times[-1] == pytest.approx((sent_bits - pacer.burst) / (FACTOR * TARGET), rel=0.05)
    # Over any window, never more than 1.2x the target plus one burst.
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            span = times[j] - start
            bits = 8 * MTU * (j - i + 1)
            assert bits <= FACTOR * TARGET * span + pacer.burst + 8 * MTU


def test_an_ordinary_frame_leaves_at_once() -> None:
    pacer = Pacer(TARGET, now=0.0)
    assert send_media(pacer, 0.0, 5) == [0.0] * 5
    # Its bits drain while the next frame is made.
    assert pacer.delay(1 / 30) == 0.0


def test_a_new_target_drains_the_backlog_at_the_new_rate() -> None:
    pacer = Pacer(TARGET, now=0.0)
    send_media(pacer, 0.0, 30)
    backlog = pacer.backlog(0.0)
    pacer.set_target(2 * TARGET, now=0.0)
    assert pacer.backlog(0.0) == pytest.approx(backlog / 2)


def test_what_is_charged_without_waiting_still_counts() -> None:
    pacer = Pacer(TARGET, now=0.0)
    for _ in range(40):
        pacer.charge(0.0, 200)  # retransmissions, copies: never held, always counted
    assert pacer.delay(0.0) > 0


def test_retransmissions_go_behind_media_and_within_the_bucket() -> None:
    pacer = Pacer(TARGET, now=0.0)
    assert pacer.next_retransmission(0.0) == (None, math.inf)
    assert not pacer.nack(0.0, [10, 11], keyframe_bytes=16_000)
    pacer.media_waiting = 1
    seq, wait = pacer.next_retransmission(0.0)
    assert seq is None and wait > 0, "media first"
    pacer.media_waiting = 0
    assert pacer.next_retransmission(0.0) == (10, 0.0)
    pacer.charge(0.0, MTU)
    send_media(pacer, 0.0, 10)  # the bucket is full
    seq, wait = pacer.next_retransmission(0.0)
    assert seq is None and wait == pytest.approx(pacer.delay(0.0))
    assert pacer.next_retransmission(wait) == (11, 0.0)
    assert pacer.counts.retransmitted == 2


def test_what_is_not_worth_retransmitting_is_dropped() -> None:
    pacer = Pacer(TARGET, now=0.0)
    pacer.keyframe_sent(100)
    assert not pacer.nack(0.0, [98, 99, 100, 101], keyframe_bytes=16_000)
    assert pacer.counts.dropped_old == 2  # before the keyframe: it replaced them
    assert pacer.next_retransmission(0.0)[0] == 100
    # Asked again within a round trip of its copy: still on its way.
    assert not pacer.nack(0.01, [100], keyframe_bytes=16_000)
    assert pacer.counts.dropped_repeat == 1
    # Waited past MAX_WAIT behind media: the player has asked for a keyframe by now.
    assert pacer.next_retransmission(MAX_WAIT + 1.0) == (None, math.inf)
    assert pacer.counts.dropped_late == 1
    # A keyframe sent meanwhile makes what waits stale.
    pacer.nack(2.0, [120], keyframe_bytes=16_000)
    pacer.keyframe_sent(130)
    assert pacer.next_retransmission(2.0) == (None, math.inf)
    assert pacer.counts.dropped_old == 3


def test_a_nack_dearer_than_a_keyframe_asks_for_one_instead() -> None:
    pacer = Pacer(TARGET, now=0.0)
    # After an outage: 100 packets lost, a keyframe is 16 kB.
    assert pacer.nack(0.0, list(range(100, 200)), keyframe_bytes=16_000)
    assert pacer.queued == 0
    assert pacer.counts.answered_by_keyframe == 100
    assert not pacer.nack(0.0, list(range(300, 310)), keyframe_bytes=16_000)
    assert pacer.queued == 10


def test_sequence_numbers_wrap() -> None:
    assert seq_before(65535, 2)
    assert not seq_before(2, 65535)
    assert seq_before(1, 2) and not seq_before(2, 2)


def test_keyframe_requests_faster_than_a_keyframe_crosses_are_merged() -> None:
    gate = KeyframeGate()
    assert gate.request(0.0), "the first is answered at once"
    assert not gate.request(0.1), "its keyframe is not out yet"
    # A 16 kB keyframe leaves at 0.05 s: it crosses 500 kbit/s in 0.256 s, plus a round trip.
    gate.keyframe_sent(0.05, 16_000, TARGET, rtt=0.1)
    assert gate.busy_until == pytest.approx(0.05 + 0.256 + 0.1)
    assert not gate.request(0.3)
    assert not gate.request(0.4)
    assert gate.request(0.41), "still missing once it should have come: a new one"
    assert (gate.counts.forwarded, gate.counts.merged) == (2, 3)


def test_a_keyframe_that_never_leaves_does_not_silence_the_player() -> None:
    gate = KeyframeGate()
    assert gate.request(0.0)
    assert not gate.request(ANSWER_TIMEOUT - 0.01)
    assert gate.request(ANSWER_TIMEOUT)


def test_the_longest_run_of_a_nack() -> None:
    assert Pacer.longest_run([]) == 0
    assert Pacer.longest_run([5, 7, 9]) == 1
    assert Pacer.longest_run([9, 3, 4, 5, 10, 11]) == 3
