"""Reading a page's presented frames (issue 24): the figures a player feels,
from a frame log, including a freeze the browser has not counted yet."""

from __future__ import annotations

import pytest
from playcast_testing.page_media import Presented, freeze_threshold


def steady(start: float, end: float, fps: float = 30) -> list[float]:
    n = round((end - start) * fps)
    return [start + i / fps for i in range(n)]


def test_the_w3c_freeze_threshold() -> None:
    assert freeze_threshold(30) == pytest.approx(1 / 30 + 0.150)
    assert freeze_threshold(5) == pytest.approx(0.6)  # three frames of 200 ms


def test_a_picture_still_frozen_at_the_end_counts() -> None:
    # 2 s of frames, then nothing for the last 3 s of the window.
    shown = Presented.window(steady(0, 2), 0.0, 5.0)
    assert shown.fps == pytest.approx(60 / 5)
    assert shown.longest_gap == pytest.approx(3.0 + 1 / 30)
    count, seconds = shown.freezes()
    assert count == 1 and seconds == pytest.approx(3.0 + 1 / 30)
    assert shown.frozen_per_minute == pytest.approx(12 * seconds)


def test_gaps_inside_and_the_way_back_after_an_outage() -> None:
    frames = [*steady(0, 1), 1.5, *steady(2.5, 4)]  # a lone frame, then a moving picture
    shown = Presented.window(frames, 0.0, 4.0)
    count, seconds = shown.freezes()
    assert count == 2 and seconds == pytest.approx(0.5 + 1 / 30 + 1.0)
    assert shown.back_after(1.2) == pytest.approx(1.3), "the lone frame does not move"
    assert shown.back_after(3.99) is None
    assert Presented.window([], 0.0, 2.0).longest_gap == 2.0
