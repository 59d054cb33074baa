"""The impairment harness's link model (issue 24) under a fake clock: every
packet's fate is computed, never waited for, so these run in well under a second."""

from __future__ import annotations

import statistics
import struct

import pytest
from playcast_testing.netem import (
    UDP_OVERHEAD,
    Capacity,
    GilbertElliott,
    Impairment,
    Link,
    LinkConfig,
)
from playcast_testing.netem_presets import MBIT, PRESETS, RFC8867_SECONDS, preset
from playcast_testing.relay import (
    DTLS,
    RTCP,
    RTP,
    STUN,
    Sample,
    bins,
    classify,
    frames_sent,
    peak_rate,
    rate,
    stun_header,
)

SIZE = 1200  # a typical RTP packet's UDP payload


def offer(
    link: Link, rate_bps: float, seconds: float, start: float = 0.0
) -> list[tuple[float, float | None]]:
    """Packets of ``SIZE`` bytes at ``rate_bps``: [(sent at, delivered at or None)]."""
    gap = SIZE * 8 / rate_bps
    out = []
    for i in range(int(seconds / gap)):
        t = start + i * gap
        out.append((t, link.send(t, SIZE).at))
    return out


def test_a_clean_link_delivers_everything_at_once_in_order() -> None:
    link = Link(LinkConfig())
    sent = offer(link, 10 * MBIT, 1.0)
    assert all(at == t for t, at in sent)
    assert link.stats.delivered == link.stats.offered == len(sent)
    assert link.stats.dropped == 0


def test_delay_and_jitter_never_reorder_unless_asked() -> None:
    link = Link(LinkConfig(delay=0.050, jitter=0.020), seed=3)
    sent = offer(link, 2 * MBIT, 5.0)
    delays = [at - t for t, at in sent if at is not None]
    arrivals = [at for _, at in sent if at is not None]
    assert arrivals == sorted(arrivals)
    assert min(delays) >= 0.030 - 1e-9
    assert 0.045 < statistics.mean(delays) < 0.060  # held-back packets add a little
    assert max(delays) <= 0.070 + 0.005  # a packet waits at most for one late one before it

    free = Link(LinkConfig(delay=0.050, jitter=0.020, reorder=True), seed=3)
    pairs = [(t, at) for t, at in offer(free, 2 * MBIT, 5.0) if at is not None]
    assert [at for _, at in pairs] != sorted(at for _, at in pairs)
    assert statistics.mean(at - t for t, at in pairs) == pytest.approx(0.050, abs=0.002)


def test_random_loss_hits_its_rate_and_is_repeatable() -> None:
    link = Link(LinkConfig(loss=0.05), seed=7)
    fates = [link.send(i * 0.001, SIZE).delivered for i in range(20_000)]
    assert 0.045 < fates.count(False) / len(fates) < 0.055
    assert link.stats.lost_random == fates.count(False)
    again = Link(LinkConfig(loss=0.05), seed=7)
    assert [again.send(i * 0.001, SIZE).delivered for i in range(20_000)] == fates


def test_gilbert_elliott_loses_in_bursts() -> None:
    ge = GilbertElliott.bursts(loss=0.05, mean_burst=4)
    assert ge.mean_loss == pytest.approx(0.05)
    link = Link(LinkConfig(burst=ge), seed=11)
    fates = [link.send(i * 0.001, SIZE).delivered for i in range(50_000)]
    lost = fates.count(False) / len(fates)
    runs, run = [], 0
    for ok in fates:
        if not ok:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert 0.04 < lost < 0.06
    assert 3.2 < statistics.mean(runs) < 4.8  # random loss at 5 % would give 1.05
    assert link.stats.lost_burst == fates.count(False)
    # Loss in the good state too, none in the bad: the general four-parameter chain.
    soft = GilbertElliott(p=0.01, r=0.1, loss_good=0.01, loss_bad=0.5)
    assert soft.mean_loss == pytest.approx(0.01 * 10 / 11 + 0.5 / 11)
    with pytest.raises(ValueError):
        GilbertElliott(p=0.1, r=0.0)


def test_a_cap_never_carries_more_than_its_rate_and_drops_at_the_tail() -> None:
    cap = 1 * MBIT
    link = Link(LinkConfig(capacity=Capacity.constant(cap), queue_ms=100))
    sent = offer(link, 2 * cap, 10.0)  # twice what fits
    delivered = [at for _, at in sent if at is not None]
    per_second = [0] * 11
    for at in delivered:
        per_second[int(at)] += SIZE + UDP_OVERHEAD
    assert all(8 * b <= cap + 8 * (SIZE + UDP_OVERHEAD) for b in per_second)
    assert 8 * per_second[5] > 0.95 * cap, "a full queue keeps the link busy"
    assert link.stats.dropped_queue > 0.4 * len(sent)
    wire_time = (SIZE + UDP_OVERHEAD) * 8 / cap
    assert max(at - t for t, at in sent if at is not None) <= 0.100 + 2 * wire_time
    # A queue in bytes: at most this many bytes wait.
    small = Link(LinkConfig(capacity=Capacity.constant(cap), queue_bytes=3 * (SIZE + UDP_OVERHEAD)))
    burst = [small.send(0.0, SIZE).at for _ in range(10)]
    assert sum(at is not None for at in burst) == 3
    assert small.stats.dropped_queue == 7


def test_a_capacity_schedule_is_integrated_across_its_steps() -> None:
    steps = Capacity(((0.0, 8000.0), (1.0, 0.0), (2.0, 16000.0)))
    assert steps.at(0.5) == 8000 and steps.at(1.5) == 0 and steps.at(9) == 16000
    assert steps.finish(0.0, 8000) == pytest.approx(1.0)
    # 4000 bits in the first half second, nothing for a second, 4000 more at 16 kbit/s.
    assert steps.finish(0.5, 8000) == pytest.approx(2.25)
    assert steps.finish(1.2, 16000) == pytest.approx(3.0)
    assert Capacity(((0.0, 1000.0), (1.0, 0.0))).finish(0.5, 1000) == float("inf")
    assert steps.stretched(10).steps == ((0.0, 8000.0), (10.0, 0.0), (20.0, 16000.0))
    with pytest.raises(ValueError):
        Capacity(((1.0, 1000.0),))
    # A link on 6 -> 1.5 -> 6 Mbit/s carries what each stretch allows.
    link = Link(
        LinkConfig(
            capacity=Capacity(((0, 6 * MBIT), (10, 1.5 * MBIT), (20, 6 * MBIT))), queue_ms=100
        )
    )
    sent = offer(link, 8 * MBIT, 30.0)
    carried = [0.0] * 3
    for _, at in sent:
        if at is not None:
            carried[min(2, int(at // 10))] += 8 * (SIZE + UDP_OVERHEAD) / 10
    assert carried[0] == pytest.approx(6 * MBIT, rel=0.02)
    assert carried[1] == pytest.approx(1.5 * MBIT, rel=0.02)
    assert carried[2] == pytest.approx(6 * MBIT, rel=0.02)


def test_nothing_passes_an_outage_and_what_was_in_flight_is_lost() -> None:
    link = Link(LinkConfig(delay=0.100, outages=((2.0, 1.0),)))
    sent = offer(link, 1 * MBIT, 5.0)
    for t, at in sent:
        if 2.0 <= t < 3.0 or 1.9 < t < 2.0:  # sent during it, or landing in it
            assert at is None, t
        else:
            assert at == pytest.approx(t + 0.100), t
    assert link.stats.lost_outage == sum(1 for t, _ in sent if 1.9 < t < 3.0)
    assert link.outages() == [(2.0, 3.0)]
    # One on demand, counted from the link's own origin.
    late = Link(LinkConfig(), origin=100.0)
    late.outage(105.0, 0.5)
    assert late.cut(105.2) and not late.cut(105.5) and not late.cut(104.9)
    assert late.send(105.1, SIZE).reason == "outage"


def test_reconfiguring_restarts_the_schedule_from_now() -> None:
    link = Link(LinkConfig())
    link.send(0.0, SIZE)
    link.reconfigure(LinkConfig(outages=((1.0, 1.0),)), now=50.0)
    assert link.send(50.5, SIZE).delivered
    assert not link.send(51.5, SIZE).delivered
    assert link.send(52.0, SIZE).delivered
    assert link.outages() == [(51.0, 52.0)]


def test_presets_carry_pions_values_and_rfc_8867_schedules() -> None:
    assert preset("3g").down.capacity == Capacity.constant(780_000)
    assert preset("3g").up.capacity == Capacity.constant(330_000)
    assert preset("lte").up.delay == pytest.approx(0.065)
    very_bad = preset("very-bad")
    assert (very_bad.down.loss, very_bad.down.delay) == (0.10, 0.250)
    assert very_bad.down.capacity == Capacity.constant(1 * MBIT)
    rfc = preset("rfc8867-5.1").down
    assert rfc.capacity is not None
    assert [rfc.capacity.at(t) / MBIT for t in (0, 39, 40, 60, 80, 99)] == [1, 1, 2.5, 0.6, 1, 1]
    assert rfc.queue_limit_ms == 300 and rfc.delay == 0.050
    assert set(RFC8867_SECONDS) <= set(PRESETS)
    assert LinkConfig(capacity=Capacity.constant(MBIT)).queue_limit_ms == 300  # the default queue
    with pytest.raises(ValueError, match="no network preset"):
        preset("5g")
    both = Impairment.both("x", LinkConfig(delay=0.01)).with_outages((3.0, 1.0)).stretched(2)
    assert both.down.outages == both.up.outages == ((6.0, 1.0),)


def test_the_relay_tells_what_passes_from_its_first_bytes() -> None:
    binding = struct.pack("!HHI", 0x0001, 4, 0x2112A442) + b"t" * 12 + struct.pack("!HH", 0x0025, 0)
    assert classify(binding) == (STUN, -1)
    assert stun_header(binding) == (0x0001, b"t" * 12, {0x0025})
    assert stun_header(binding[:-4]) is None  # cut short
    assert classify(bytes([22, 254, 253])) == (DTLS, -1)  # a DTLS handshake record
    assert classify(bytes([0x80, 0x80 | 102, 0, 1])) == (RTP, 128 + 102)  # marker bit set
    assert Sample(0, 9, RTP, 128 + 102).marker and Sample(0, 9, RTP, 128 + 102).payload_type == 102
    assert classify(bytes([0x80, 102, 0, 1])) == (RTP, 102)
    assert classify(bytes([0x80, 201, 0, 7])) == (RTCP, -1)  # a receiver report


def test_rates_bins_and_the_peak_window() -> None:
    # 1000 bytes every 10 ms for 2 s, then 4000 bytes every 10 ms for 1 s.
    samples = [Sample(i * 0.01, 1000, RTP) for i in range(200)]
    samples += [Sample(2 + i * 0.01, 4000, RTP) for i in range(100)]
    assert rate(samples, 0, 2) == pytest.approx(800_000)
    assert bins(samples, 0, 3, 1.0) == [100_000, 100_000, 400_000]
    assert peak_rate(samples, 0, 3, 1.0) == pytest.approx(3_200_000)
    assert peak_rate(samples, 0, 3, 2.0) == pytest.approx(2_000_000)
    # A frame is its last packet, the one with the marker bit; other streams do not count.
    video = [Sample(i * 0.01, 1000, RTP, 102 + 128 * (i % 3 == 2)) for i in range(30)]
    audio = [Sample(i * 0.02, 100, RTP, 111 + 128) for i in range(15)]
    assert frames_sent(video + audio, 102, 0, 0.3) == 10
