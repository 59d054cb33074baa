"""The ladder of encodings (backends/ladder.py) under a fake clock: down after
a while under a rung, straight to the rung that fits; up one rung at a time
after a longer while with headroom; a failed step up makes the next wait
longer; and the probing form for an encoder held at its rung. And the
synthetic game's bottom rungs (backends/bottom.py)."""

from __future__ import annotations

import pytest

from playcast.backends.bottom import BOTTOM, OutputRate, bottom_ladder
from playcast.backends.h264 import EncoderSettings
from playcast.backends.ladder import MAX_BACKOFF, Ladder, LadderTiming

NEEDS = (4_000_000, 2_400_000, 1_440_000, 860_000)
TIMING = LadderTiming(down_after=2.0, up_after=10.0, headroom=1.2)


def run(ladder: Ladder, start: float, seconds: float, target: float) -> list[tuple[float, int]]:
    """Feed ``target`` every 0.5 s; the moves, with their times."""
    moves = []
    t = start
    while t <= start + seconds + 1e-9:
        moved = ladder.update(t, target)
        if moved is not None:
            moves.append((t, moved))
        t += 0.5
    return moves


def test_it_steps_down_after_a_while_to_the_rung_that_fits() -> None:
    ladder = Ladder(NEEDS, TIMING)
    assert run(ladder, 0.0, 1.5, 1_000_000) == []
    assert run(ladder, 2.0, 0.0, 1_000_000) == [(2.0, 3)]


def test_a_dip_shorter_than_the_wait_does_not_move_it() -> None:
    ladder = Ladder(NEEDS, TIMING)
    run(ladder, 0.0, 1.5, 1_000_000)
    run(ladder, 2.0, 5.0, 5_000_000)
    assert ladder.rung == 0


def test_it_steps_up_one_rung_after_headroom_for_up_after() -> None:
    ladder = Ladder(NEEDS, TIMING)
    run(ladder, 0.0, 2.0, 500_000)
    assert ladder.rung == 3
    # Enough for rung 2, but not with headroom: stays.
    assert run(ladder, 3.0, 20.0, 1_500_000) == []
    moves = run(ladder, 24.0, 35.0, 5_000_000)
    assert [rung for _, rung in moves] == [2, 1, 0]
    assert moves[0][0] == pytest.approx(34.0)


def test_a_step_up_that_comes_back_down_doubles_the_next_wait() -> None:
    ladder = Ladder(NEEDS, TIMING)
    run(ladder, 0.0, 2.0, 500_000)
    up = run(ladder, 3.0, 10.0, 1_800_000)  # 1.2 x 1.44 M: rung 2 is tried...
    assert up and up[-1][1] == 2
    run(ladder, 13.5, 2.0, 1_200_000)  # ...and the link cannot carry it
    assert ladder.rung == 3
    assert ladder.up_wait == 2 * TIMING.up_after
    for _ in range(10):
        run(ladder, 100.0, 0.0, 5_000_000)
    assert ladder.up_wait <= MAX_BACKOFF * TIMING.up_after


def test_probing_tries_the_next_rung_on_headroom_over_the_current_one() -> None:
    # A phone held at its rung: the estimate shows 20 % over what it uses, never more.
    probing = Ladder(NEEDS, LadderTiming(down_after=2.0, up_after=10.0, probe=True))
    run(probing, 0.0, 2.0, 500_000)
    assert probing.rung == 3
    moves = run(probing, 3.0, 10.0, 1.2 * NEEDS[3])
    assert [rung for _, rung in moves] == [2]


def test_no_target_is_the_top_at_once() -> None:
    ladder = Ladder(NEEDS, TIMING)
    run(ladder, 0.0, 2.0, 500_000)
    assert ladder.update(3.0, None) == 0


def test_rungs_must_go_down() -> None:
    with pytest.raises(ValueError):
        Ladder((1, 2))


def test_an_encoder_that_cannot_hold_its_target_is_over_it() -> None:
    out = OutputRate()
    assert not out.over(0.0, 300_000)
    for i in range(30):  # 1 s at 30 fps, 2 kB a frame: 480 kbit/s
        out.add(i / 30, 2_000)
    assert not out.over(0.5, 300_000), "judged only over a whole second"
    assert out.over(1.0, 300_000)
    assert not out.over(1.0, 400_000)
    assert not out.over(1.0, None)
    out.clear()
    assert not out.over(1.0, 300_000)


def test_the_bottom_ladder_scales_with_the_picture() -> None:
    full = bottom_ladder(EncoderSettings(720, 1280, 30))
    small = bottom_ladder(EncoderSettings(360, 640, 15))
    assert full.needs[0] == BOTTOM[0][2]
    assert small.needs[0] == round(BOTTOM[0][2] / 8)
