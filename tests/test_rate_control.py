"""The worker's estimate of the player's link (worker/rate_control.py), under a
fake clock: GCC's loss-based controller under the REMB, its hysteresis, the
bounds, an outage that is not taken for congestion, and the copies that loss
the REMB does not see gets instead of a lower rate."""

from __future__ import annotations

import itertools

import pytest

from playcast.worker.rate_control import (
    CHANGE,
    COPIES_HOLD,
    INCREASE,
    LOSS_WINDOW,
    PROBE,
    REMB_CALM,
    REMB_CUT_INTERVAL,
    REMB_STILL,
    RateController,
    RateSettings,
)

SETTINGS = RateSettings(min_bitrate=100_000, max_bitrate=6_000_000, start_bitrate=1_000_000)
PACKETS_PER_S = 100


class Receiver:
    """A player sending receiver reports: ``seq`` packets expected so far, ``lost`` of them lost."""

    def __init__(self, controller: RateController) -> None:
        self.c = controller
        self.now = 0.0
        self.seq = 1000
        self.lost = 0

    def report(self, seconds: float, loss: float, rtt: float | None = 0.05) -> object:
        self.now += seconds
        packets = round(PACKETS_PER_S * seconds)
        self.seq += packets
        self.lost += round(loss * packets)
        return self.c.on_report(self.now, self.seq, self.lost, rtt)

    def steady(self, seconds: float, loss: float, every: float = 0.2) -> None:
        for _ in range(round(seconds / every)):
            self.report(every, loss)


def controller() -> tuple[RateController, Receiver]:
    c = RateController(SETTINGS, now=0.0)
    r = Receiver(c)
    r.report(0.0, 0.0)  # the first report opens the loss window
    return c, r


def test_it_starts_at_the_start_rate_within_its_bounds() -> None:
    assert RateController(SETTINGS, 0.0).target == 1_000_000
    low = RateSettings(min_bitrate=2_000_000, max_bitrate=4_000_000, start_bitrate=1_000_000)
    assert RateController(low, 0.0).target == 2_000_000
    with pytest.raises(ValueError, match="min bit rate"):
        RateSettings(min_bitrate=5, max_bitrate=4)


def test_no_loss_raises_it_8_percent_a_second_up_to_the_max() -> None:
    c, r = controller()
    estimates = [c.estimate]
    for _ in range(5):
        r.report(1.0, 0.0)
        estimates.append(c.estimate)
    for before, after in itertools.pairwise(estimates):
        assert after == pytest.approx(before * INCREASE + 1000, rel=1e-6)
    # Never faster, however often the player reports.
    before = c.estimate
    r.steady(1.0, 0.0, every=0.05)
    assert c.estimate <= before * INCREASE + 1000
    r.steady(60.0, 0.0)
    assert c.target == SETTINGS.max_bitrate


def test_heavy_loss_lowers_it_by_half_the_loss_at_most_once_per_rtt_plus_300_ms() -> None:
    c, r = controller()
    r.report(LOSS_WINDOW, 0.2)
    assert c.estimate == pytest.approx(1_000_000 * 0.9)
    assert c.target == 900_000 or c.target == 1_000_000  # published only past CHANGE
    r.report(0.1, 0.5)  # inside the window: no new figure yet
    assert c.estimate == pytest.approx(900_000)
    r.report(LOSS_WINDOW - 0.1, 0.5)  # the window's loss: 50 %
    assert c.estimate == pytest.approx(900_000 * 0.75)
    assert c.target == round(c.estimate)
    # Lower again only once a round trip and 300 ms have passed since: with a
    # 1 s round trip, not at the next window's end.
    lowered = c.estimate
    r.report(LOSS_WINDOW, 0.5, rtt=1.0)
    assert c.estimate == lowered
    r.report(LOSS_WINDOW, 0.5, rtt=1.0)
    assert c.estimate < lowered


def test_loss_between_2_and_10_percent_holds_it() -> None:
    c, r = controller()
    r.steady(20.0, 0.05)
    assert c.estimate == 1_000_000
    assert c.target == 1_000_000


def test_the_loss_is_counted_over_a_window_not_per_report() -> None:
    # Chromium reports every few packets early on; one report's own loss is noise.
    c, r = controller()
    for i in range(20):
        r.report(0.05, 0.6 if i % 4 == 0 else 0.0)  # 15 % over the second
    assert c.loss == pytest.approx(0.15, abs=0.02)
    assert c.estimate < 1_000_000


def remb_for(c: RateController, r: Receiver, bps: int, seconds: float) -> list[object]:
    """The browser's REMB every 200 ms for ``seconds`` (its reports alongside,
    no loss); the changes it made."""
    changes = []
    for _ in range(round(seconds / 0.2)):
        changes.append(c.on_remb(r.now, bps))
        r.report(0.2, 0.0)
    return [x for x in changes if x is not None]


def test_remb_is_a_ceiling_and_the_rise_above_it_starts_from_it() -> None:
    c, r = controller()
    changes = remb_for(c, r, 400_000, 1.0)
    assert changes and all("REMB" in str(x) for x in changes)
    assert c.target == 400_000
    assert remb_for(c, r, 410_000, REMB_STILL - 0.4) == []
    assert c.target == 400_000, "no loss cannot lift it over a REMB that moves"
    c.on_remb(r.now, 2_000_000)
    r.steady(1.0, 0.0)
    # It rises from the old REMB at GCC's pace, not to the new one at once.
    assert 400_000 < c.estimate <= 400_000 * INCREASE**2 + 3000


def test_the_remb_cuts_by_half_at_most_every_half_second() -> None:
    # A stall of ours can make Chromium's estimate dive far under the link.
    c, r = controller()
    c.on_remb(r.now, 100_000)
    assert c.target == 500_000
    remb_for(c, r, 100_000, REMB_CUT_INTERVAL - 0.1)
    assert c.target == 500_000
    remb_for(c, r, 100_000, 0.4)
    assert c.target == 250_000
    remb_for(c, r, 100_000, 1.0)
    assert c.target == 125_000 or c.target == SETTINGS.min_bitrate


def test_the_target_moves_only_by_10_percent_or_to_a_bound() -> None:
    c, r = controller()
    assert c.on_remb(r.now, int(1_000_000 * (1 - CHANGE / 2))) is None
    assert c.target == 1_000_000
    assert c.on_remb(r.now + 1.0, 800_000) is not None
    assert c.target == 800_000
    remb_for(c, r, 10_000, 3.0)
    assert c.target == SETTINGS.min_bitrate
    assert c.on_remb(r.now, 1) is None  # at the bound already


def test_an_outage_is_not_congestion() -> None:
    c, r = controller()
    r.steady(2.0, 0.0)
    before = c.estimate
    # 3 s without a report, then one whose running count says 40 % lost.
    assert r.report(3.0, 0.4) is None
    assert c.estimate == before
    r.steady(1.0, 0.0)
    assert c.estimate >= before


def test_the_round_trip_is_kept() -> None:
    c, r = controller()
    r.report(0.5, 0.0, rtt=0.12)
    assert c.rtt == 0.12
    r.report(0.5, 0.0, rtt=None)
    assert c.rtt == 0.12


def calm_remb(c: RateController, r: Receiver, bps: int = 2_000_000) -> None:
    """A REMB that has not fallen for REMB_CALM: the delay says no congestion."""
    c.on_remb(r.now, bps)
    r.steady(REMB_CALM, 0.0)


def test_loss_the_remb_does_not_see_gets_copies_not_a_lower_rate() -> None:
    c, r = controller()
    calm_remb(c, r)
    before = c.estimate
    r.steady(1.2, 0.05)
    assert c.copies == 1
    r.steady(1.2, 0.15)
    assert c.copies == 2
    assert c.estimate >= before, "the medium's loss does not lower the rate"
    # Less loss now (the copies make up for some): still needed a while.
    r.steady(6.0, 0.04)
    assert c.copies == 2
    # Under a quarter of the step's threshold for COPIES_HOLD: one step down.
    r.steady(COPIES_HOLD + 1.2, 0.0)
    assert c.copies == 1


def test_congestion_drops_the_copies_and_lowers_the_rate() -> None:
    c, r = controller()
    calm_remb(c, r)
    r.steady(1.2, 0.15)
    assert c.copies == 2
    c.on_remb(r.now, 1_000_000)  # the delay rose: the REMB fell
    assert c.copies == 0
    before = c.estimate
    r.steady(1.2, 0.15)
    assert c.copies == 0 and c.estimate < before


def test_heavy_loss_is_congestion_even_under_a_calm_remb() -> None:
    c, r = controller()
    calm_remb(c, r)
    before = c.estimate
    r.steady(2.4, 0.4)
    assert c.copies == 0 and c.estimate < before


def test_a_nack_for_a_long_run_is_an_outage_not_congestion() -> None:
    c, r = controller()
    r.steady(2.0, 0.0)
    before = c.estimate
    r.report(0.5, 0.0)
    c.on_outage(r.now)  # reports kept coming (a short outage), but a run was lost
    r.report(0.5, 0.6)  # opens a new window: its loss is not counted
    r.report(LOSS_WINDOW, 0.0)
    assert c.estimate >= before


def test_loss_with_a_filling_queue_is_congestion() -> None:
    # A shallow drop-tail queue loses packets before the REMB sees its delay;
    # the round trip, though, has grown.
    c, r = controller()
    r.report(0.2, 0.0, rtt=0.04)
    calm_remb(c, r)
    before = c.estimate
    for _ in range(12):
        r.report(0.2, 0.15, rtt=0.12)
    assert c.copies == 0 and c.estimate < before


def test_loss_from_before_the_remb_fell_is_not_answered_twice() -> None:
    # A start too fast for the link: its loss shows after the REMB has cut the rate.
    c, r = controller()
    r.steady(0.6, 0.5)
    c.on_remb(r.now, 600_000)
    r.steady(0.6, 0.5)  # the window that began before the cut closes
    assert c.target == 600_000
    r.steady(1.2, 0.5)  # a window all after the cut: the loss is the new rate's
    assert c.target < 600_000


def test_a_remb_that_stands_still_is_probed_past_while_the_link_says_nothing() -> None:
    c, r = controller()
    c.on_remb(r.now, 300_000)
    r.steady(REMB_STILL - 1.0, 0.0)
    assert c.estimate == 300_000
    for _ in range(30):  # the same REMB, again and again, and no loss
        c.on_remb(r.now, 300_000)
        r.steady(1.0, 0.0)
    assert c.estimate == PROBE * 300_000
    # A new word from the browser: the ceiling holds again.
    c.on_remb(r.now, 400_000)
    assert c.estimate == 400_000


def test_no_probing_past_a_remb_with_loss_or_a_queue() -> None:
    c, r = controller()
    c.on_remb(r.now, 300_000)
    r.steady(REMB_STILL + 5.0, 0.05)
    assert c.estimate <= 300_000
    c2, r2 = controller()
    r2.report(0.2, 0.0, rtt=0.02)
    c2.on_remb(r2.now, 300_000)
    for _ in range(50):
        r2.report(0.2, 0.0, rtt=0.2)
    assert c2.estimate <= 300_000


def test_loss_at_the_remb_ceiling_is_the_links_edge_not_the_medium() -> None:
    c, r = controller()
    calm_remb(c, r, bps=1_000_000)  # the target sits at the REMB
    r.steady(2.4, 0.05)
    assert c.copies == 0
