"""Named network conditions for the impairment harness: Pion's network
conditioner presets and RFC 8867's variable-capacity test cases.

Pion's values are from pion/transport, ``vnet/network_conditioner_presets.go``
(commit 2dfbb942c9e4508a9780c4868397a8785b1d5635): ``MaxBandwidth`` in kbit/s
(its doc comment says Kbps; its limiter divides bytes by 1000, so it may
really limit kB/s: we take the comment), ``Latency`` added to each direction,
``PacketLoss`` in thousandths. Pion's limiter has no drop-tail queue (it
sleeps, so its queue is unbounded); here every capped link gets RFC 8867's
300 ms bottleneck queue unless a preset says otherwise.

One change from Pion: its "very bad network" adds 500 ms to each direction
(a 1 s round trip); issue 24 reads it as a 500 ms round trip, 250 ms each way,
and so does ``very-bad`` here (``very-bad-pion`` keeps Pion's).

RFC 8867 (Test Cases for Evaluating Congestion Control for Interactive
Real-Time Media), section 5: the bottleneck's capacity changes on a schedule,
50 ms one-way propagation delay, a 300 ms queue (section 4.1). The schedules
below are section 5.1 (one flow), 5.2 (its capacity was shared by two flows;
here one flow gets it all) and 5.3 (both directions capped, each on its own
schedule), as Cisco's ns3-rmcat test suite (``test/rmcat-wired-test-suite.cc``)
encodes them.
"""

from __future__ import annotations

from playcast_testing.netem import Capacity, GilbertElliott, Impairment, LinkConfig

MBIT = 1_000_000
KBIT = 1_000


def _pion(name: str, down_kbps: float, up_kbps: float, down_ms: float, up_ms: float) -> Impairment:
    return Impairment(
        name,
        down=LinkConfig(delay=down_ms / 1000, capacity=Capacity.constant(down_kbps * KBIT)),
        up=LinkConfig(delay=up_ms / 1000, capacity=Capacity.constant(up_kbps * KBIT)),
        note=f"Pion {name}: {down_kbps:g}/{up_kbps:g} kbit/s down/up, {down_ms:g}/{up_ms:g} ms",
    )


def _schedule(*steps: tuple[float, float]) -> Capacity:
    return Capacity(tuple((t, mbps * MBIT) for t, mbps in steps))


RFC8867_DELAY = 0.050  # one way (section 5.1's propagation delay)
RFC8867_QUEUE_MS = 300.0


def _rfc8867(
    case: str,
    down: tuple[tuple[float, float], ...],
    note: str,
    up: tuple[tuple[float, float], ...] | None = None,
) -> Impairment:
    """One of RFC 8867's cases: capacity steps (second, Mbit/s) on a 300 ms queue."""

    def link(steps: tuple[tuple[float, float], ...] | None) -> LinkConfig:
        if steps is None:
            return LinkConfig(delay=RFC8867_DELAY)
        return LinkConfig(
            delay=RFC8867_DELAY, capacity=_schedule(*steps), queue_ms=RFC8867_QUEUE_MS
        )

    return Impairment(f"rfc8867-{case}", link(down), link(up), f"RFC 8867 {case}: Mbit/s {note}")


_VERY_BAD = LinkConfig(delay=0.250, loss=0.10, capacity=Capacity.constant(1 * MBIT))

PRESETS: dict[str, Impairment] = {
    p.name: p
    for p in (
        Impairment("clean", note="nothing in the way: the relay only forwards"),
        Impairment.both("full-loss", LinkConfig(loss=1.0), "Pion: every packet lost"),
        _pion("3g", 780, 330, 100, 100),
        _pion("edge", 240, 200, 400, 440),
        _pion("dsl", 2000, 256, 5, 5),
        _pion("lte", 50_000, 10_000, 50, 65),
        _pion("wifi", 40_000, 33_000, 1, 1),
        Impairment.both(
            "very-bad", _VERY_BAD, "1 Mbit/s, 250 ms each way (500 ms round trip), 10 % loss"
        ),
        Impairment.both(
            "very-bad-pion",
            LinkConfig(delay=0.500, loss=0.10, capacity=Capacity.constant(1 * MBIT)),
            "Pion's own: 1 Mbit/s, 500 ms each way, 10 % loss",
        ),
        Impairment.both(
            "wifi-bursts",
            LinkConfig(delay=0.010, jitter=0.005, burst=GilbertElliott.bursts(0.02, 4)),
            "2 % loss in bursts of 4 packets on average, 10 ± 5 ms each way",
        ),
        _rfc8867(
            "5.1",
            ((0, 1.0), (40, 2.5), (60, 0.6), (80, 1.0)),
            "1 / 2.5 / 0.6 / 1 at 0 / 40 / 60 / 80 s, 100 s",
        ),
        _rfc8867(
            "5.2",
            ((0, 4.0), (25, 2.0), (50, 3.5), (75, 1.0), (100, 2.0)),
            "4 / 2 / 3.5 / 1 / 2 at 0 / 25 / 50 / 75 / 100 s, 125 s",
        ),
        _rfc8867(
            "5.3",
            ((0, 2.0), (20, 1.0), (40, 0.5), (60, 2.0)),
            "2 / 1 / 0.5 / 2 at 0 / 20 / 40 / 60 s, the feedback link capped too; 100 s",
            up=((0, 2.0), (35, 0.8), (70, 2.0)),
        ),
    )
}

# How long each RFC 8867 case runs (its schedule was made for this length).
RFC8867_SECONDS = {"rfc8867-5.1": 100.0, "rfc8867-5.2": 125.0, "rfc8867-5.3": 100.0}


def preset(name: str) -> Impairment:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"no network preset {name!r} (have {', '.join(PRESETS)})") from None
