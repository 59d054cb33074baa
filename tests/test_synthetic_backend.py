"""The synthetic game backend on its own: its H.264 decodes and shows input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest

from playcast.backends.arena import SCENE_MAX_LUMA, Mark, Plane
from playcast.backends.base import BackendError, VideoPacket
from playcast.backends.synthetic import MARK_SECONDS, MAX_MARKS, SyntheticBackend

MARK_LUMA = 225
# Decoded luma may overshoot the drawn value a little around sharp edges.
CODEC_OVERSHOOT = 12


@pytest.fixture
async def backend() -> AsyncIterator[SyntheticBackend]:
    b = SyntheticBackend(fps=30)
    await b.start()
    yield b
    await b.stop()


class Decoder:
    def __init__(self) -> None:
        self.ctx = av.CodecContext.create("h264", "r")

    def decode(self, packet: VideoPacket) -> av.VideoFrame:
        frames = self.ctx.decode(av.Packet(packet.data))
        # No B-frames, no reordering: every access unit gives its picture at once.
        assert len(frames) == 1
        frame = frames[0]
        assert isinstance(frame, av.VideoFrame)
        return frame


def luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="gray")


def at(y_plane: np.ndarray, x: float, y: float) -> int:
    h, w = y_plane.shape
    return int(y_plane[round(y * (h - 1)), round(x * (w - 1))])


async def test_stream_is_decodable_baseline_h264_starting_with_a_keyframe(
    backend: SyntheticBackend,
) -> None:
    decoder = Decoder()
    packets: list[VideoPacket] = []
    async with asyncio.timeout(30):
        async for p in backend.packets():
            packets.append(p)
            decoder.decode(p)
            if len(packets) == 10:
                break
    first = packets[0]
    assert first.keyframe
    # Annex B with SPS (7) and PPS (8) in front of the IDR: what a browser needs to start.
    nal_types = [b & 0x1F for b in _nal_headers(first.data)]
    assert nal_types[:2] == [7, 8] and 5 in nal_types
    sps = first.data[first.data.index(b"\x00\x00\x01\x67") + 4 :]
    assert sps[0] == 66, "profile_idc must be baseline"
    assert not any(p.keyframe for p in packets[1:])
    pts = [p.pts for p in packets]
    assert pts == sorted(set(pts))
    ctx = decoder.ctx
    assert (ctx.width, ctx.height) == (720, 1280) == backend.size


async def test_scene_moves_and_is_never_white_without_touches(backend: SyntheticBackend) -> None:
    decoder = Decoder()
    planes = []
    async with asyncio.timeout(30):
        async for p in backend.packets():
            planes.append(luma(decoder.decode(p)))
            if len(planes) == 8:
                break
    assert max(int(y.max()) for y in planes) <= SCENE_MAX_LUMA + CODEC_OVERSHOOT
    assert (planes[0] != planes[-1]).sum() > 1000, "the arena should keep moving"


async def test_touch_down_draws_a_white_disc_at_once_and_keeps_it() -> None:
    slow = SyntheticBackend(fps=2)  # a tick every 500 ms: an input frame cannot be a tick
    await slow.start()
    try:
        decoder = Decoder()
        x, y = 0.3, 0.6
        radius = 0.03 * 720
        touched_at = 0.0
        seen: list[tuple[float, np.ndarray]] = []
        async with asyncio.timeout(30):
            async for p in slow.packets():
                plane = luma(decoder.decode(p))
                if not touched_at:
                    assert at(plane, x, y) < MARK_LUMA
                    touched_at = time.monotonic()
                    await slow.inject_touch("down", 0, x, y)
                    await slow.inject_touch("up", 0, x, y)
                    continue
                seen.append((p.captured_at - touched_at, plane))
                if p.captured_at - touched_at > MARK_SECONDS + 0.5:
                    break
        first_delay, first = seen[0]
        assert first_delay < 0.25, "the touch frame must not wait for the next tick"
        h, w = first.shape
        cx, cy = round(x * (w - 1)), round(y * (h - 1))
        # The disc is at least 3 % of the width in radius, centred on the touch.
        r = int(radius) - 2
        for dx, dy in ((0, 0), (r, 0), (-r, 0), (0, r), (0, -r)):
            assert first[cy + dy, cx + dx] >= MARK_LUMA, (dx, dy)
        kept = [plane for delay, plane in seen if delay < 0.5]
        assert all(at(plane, x, y) >= MARK_LUMA for plane in kept)
        assert at(seen[-1][1], x, y) < MARK_LUMA, "the mark should fade after a while"
    finally:
        await slow.stop()


async def test_keyframe_request_makes_the_next_packet_a_keyframe(
    backend: SyntheticBackend,
) -> None:
    keyframes = []
    async with asyncio.timeout(30):
        async for p in backend.packets():
            keyframes.append(p.keyframe)
            if len(keyframes) == 3:
                backend.request_keyframe()
            if len(keyframes) == 5:
                break
    assert keyframes == [True, False, False, True, False]
    assert backend.keyframe_requests == 1


async def test_one_consumer_at_a_time_and_reset_ends_the_stream(
    backend: SyntheticBackend,
) -> None:
    stream = aiter(backend.packets())
    assert (await anext(stream)).keyframe
    with pytest.raises(BackendError):
        await anext(aiter(backend.packets()))
    await backend.inject_touch("down", 0, 0.5, 0.5)
    await backend.reset()
    async with asyncio.timeout(30):
        async for _ in stream:
            pass  # the stream ends after the reset instead of running forever
    assert backend.resets == 1 and backend.frames == 0
    # The next player gets a fresh stream: a keyframe first, and no old marks.
    decoder = Decoder()
    fresh = aiter(backend.packets())
    first = await anext(fresh)
    assert first.keyframe
    assert at(luma(decoder.decode(first)), 0.5, 0.5) < MARK_LUMA
    await fresh.aclose()  # type: ignore[attr-defined]
    assert (await backend.health()).ok


def _nal_headers(data: bytes) -> list[int]:
    out, i = [], 0
    while (i := data.find(b"\x00\x00\x01", i)) != -1:
        i += 3
        out.append(data[i])
    return out


async def test_a_touch_flood_draws_a_bounded_number_of_marks(backend: SyntheticBackend) -> None:
    drawn: list[int] = []
    render = backend._scene.render

    def counting_render(t: float, marks: tuple[Mark, ...], flash: bool) -> Plane:
        drawn.append(len(marks))
        return render(t, marks, flash)

    backend._scene.render = counting_render  # type: ignore[method-assign]
    await backend.inject_touch("down", 0, 0.5, 0.5)
    for i in range(5000):
        await backend.inject_touch("move", 0, (i % 100) / 100, 0.5)
    async with asyncio.timeout(30):
        async for _ in backend.packets():
            if drawn:
                break
    assert 0 < max(drawn) <= MAX_MARKS


async def test_a_failed_game_is_pushed_ends_its_stream_and_stays_down_until_reset(
    backend: SyntheticBackend,
) -> None:
    heard: list[str] = []
    unwatch = backend.watch_failures(heard.append)
    stream = aiter(backend.packets())
    async with asyncio.timeout(30):
        await anext(stream)
        backend.fail("drill")
        with pytest.raises(BackendError, match="drill"):
            while True:
                await anext(stream)
    assert heard == ["drill"]
    assert not (await backend.health()).ok
    with pytest.raises(BackendError):
        await anext(aiter(backend.packets()))
    await backend.reset()
    assert (await backend.health()).ok
    unwatch()
    backend.fail("again")
    assert heard == ["drill"]  # unsubscribed


async def test_sound_comes_in_10_ms_packets_with_their_levels_and_skips_a_stall(
    backend: SyntheticBackend,
) -> None:
    packets = aiter(backend.audio_packets())
    first = await anext(packets)
    second = await anext(packets)
    assert second.pts - first.pts == 480  # 10 ms at 48 kHz
    assert first.level is not None and first.level > 30  # the quiet hum
    await backend.inject_touch("down", 0, 0.5, 0.5)
    click = await anext(packets)
    assert click.level is not None and click.level < 30
    # A stalled loop: the time it missed passes unheard, the timestamps keep
    # to the clock (no burst of packets late for theirs).
    time.sleep(0.1)  # noqa: ASYNC251 (blocking the loop is the stall)
    after = await anext(packets)
    assert after.pts - click.pts >= 480 * 9
    assert backend.audio_frames_skipped >= 8
    await packets.aclose()  # type: ignore[attr-defined]
