"""The phone's ladder of encodings against the fake phone (which streams at
the bit rate and size each scrcpy server is started with): the estimate
falls, the video steps down to the rung that fits, restarted with new
options beside the running server, the picture going on from the old one
until the new one's first keyframe; the estimate rises, it steps back up a
rung at a time; a still screen is no evidence either way."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playcast_testing.fake_device import FAKE_ADB, FakeDevice, compute_video_size

from playcast.backends.android import AndroidBackend, AndroidSettings
from playcast.backends.android.media import FRAME_90K, VideoFeed
from playcast.backends.android.settings import Rung
from playcast.backends.base import VideoPacket
from playcast.backends.nal import config_picture_size
from playcast.backends.scrcpy import SCRCPY_VERSION, MediaPacket

T = 30.0  # a bound on a hang on a loaded machine; every wait returns on its event
SCREEN = (540, 960)
RUNGS = (Rung(1_000_000, 960), Rung(600_000, 720), Rung(360_000, 536))


@pytest.fixture
async def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDevice]:
    async with FakeDevice(serial="emulator-5554", screen=SCREEN, fps=30) as dev:
        monkeypatch.setenv("PATH", f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}")
        for key, value in dev.env(tmp_path / "adb.log").items():
            monkeypatch.setenv(key, value)
        yield dev


@pytest.fixture
async def backend(phone: FakeDevice, tmp_path: Path) -> AsyncIterator[AndroidBackend]:
    jar = tmp_path / f"scrcpy-server-v{SCRCPY_VERSION}"
    jar.write_bytes(b"PK\x03\x04 not really a jar")
    settings = AndroidSettings(
        scrcpy_server=str(jar),
        serial="emulator-5554",
        max_size=960,
        video_bit_rate=1_000_000,
        connect_timeout=T,
        launch_timeout=T,
        poll_interval=0.02,
        retry_delay=0.02,
        ladder_down=0.3,
        ladder_up=0.6,
    )
    b = AndroidBackend(settings)
    await asyncio.wait_for(b.start(), T)
    yield b
    await b.stop()


class Watcher:
    """The player's side: every picture the backend hands out, and the worker's
    once-a-second word on the link (here every 100 ms, so the test is short)."""

    def __init__(self, backend: AndroidBackend) -> None:
        self.backend = backend
        self.pictures: list[VideoPacket] = []
        self.target: int | None = None
        self.changed = asyncio.Event()

    async def read(self) -> None:
        async for video in self.backend.packets():
            self.pictures.append(video)
            self.changed.set()

    async def tell(self) -> None:
        while True:
            if self.target is not None:
                self.backend.set_target_bitrate(self.target)
            await asyncio.sleep(0.1)  # the worker's tick, faster: a feed, not a wait

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(T):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def watching(backend: AndroidBackend) -> AsyncIterator[Watcher]:
    w = Watcher(backend)
    tasks = [asyncio.create_task(w.read()), asyncio.create_task(w.tell())]
    try:
        yield w
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sizes_seen(pictures: list[VideoPacket]) -> list[tuple[int, int]]:
    """The picture sizes in the order their keyframes brought them."""
    out: list[tuple[int, int]] = []
    for p in pictures:
        size = config_picture_size(p.data) if p.keyframe else None
        if size is not None and (not out or out[-1] != size):
            out.append(size)
    return out


def running_rung(phone: FakeDevice) -> tuple[int, int] | None:
    servers = phone.running_servers()
    if len(servers) != 1:
        return None
    return servers[0].video_bit_rate, servers[0].max_size


async def test_the_ladder_steps_down_under_a_narrow_link_and_back_up(
    backend: AndroidBackend, phone: FakeDevice
) -> None:
    assert backend.rungs == RUNGS
    async with watching(backend) as w:
        # The phone streams its top rung for a while (its rate is measured).
        await w.until(lambda: len(w.pictures) >= 70)
        assert running_rung(phone) == (1_000_000, 960)

        # The link carries 400 kbit/s: straight to the rung that fits.
        w.target = 400_000
        await phone.wait_until(lambda: running_rung(phone) == (360_000, 536), T)
        before = len(w.pictures)
        await w.until(lambda: len(w.pictures) >= before + 30)
        assert sizes_seen(w.pictures)[-1] == compute_video_size(*SCREEN, 536)
        assert "rung 3/3" in backend.encoding
        assert backend.encoding_bitrate == 360_000

        # A touch now lands on the new server, made for the new size.
        await backend.inject_touch("down", 0, 0.5, 0.5)
        await backend.inject_touch("up", 0, 0.5, 0.5)
        await phone.wait_until(lambda: len(phone.touches()) >= 2, T)
        assert (phone.touches()[-1].width, phone.touches()[-1].height) == compute_video_size(
            *SCREEN, 536
        )

        # The link widens: up a rung at a time, back to the top.
        w.target = 2_000_000
        await phone.wait_until(lambda: running_rung(phone) == (600_000, 720), T)
        await phone.wait_until(lambda: running_rung(phone) == (1_000_000, 960), T)
        await w.until(lambda: sizes_seen(w.pictures)[-1] == compute_video_size(*SCREEN, 960))

    # Each server started with its rung's options, each change beside the old one.
    started = [(s.video_bit_rate, s.max_size) for s in phone.servers]
    assert started == [(1_000_000, 960), (360_000, 536), (600_000, 720), (1_000_000, 960)]
    assert len(backend.switches) == 3
    # The pictures never went back in time across a server's change.
    pts = [p.pts for p in w.pictures]
    assert all(b > a for a, b in itertools.pairwise(pts))


async def test_a_still_screen_is_no_evidence(backend: AndroidBackend, phone: FakeDevice) -> None:
    async with watching(backend) as w:
        await w.until(lambda: len(w.pictures) >= 30)
        phone.hold_still()  # about a second of repeats, then nothing
        spells = phone.quiet_spells
        await phone.wait_until(lambda: phone.quiet_spells > spells, T)
        w.target = 100_000  # what a REMB over a still screen says
        spells = phone.quiet_spells
        await phone.wait_until(lambda: phone.quiet_spells > spells + 1, T)
        assert [s.video_bit_rate for s in phone.servers] == [1_000_000]


def test_a_new_servers_timestamps_never_go_back() -> None:
    feed = VideoFeed()
    with feed.consumer() as queue:
        old, new = object(), object()
        for i in range(3):
            feed.deliver(MediaPacket(b"x", 1_000_000 + 33_333 * i, True), 0.0, lambda: None, old)
        # A server that counts from its own start: shifted to follow on.
        for i in range(3):
            feed.deliver(MediaPacket(b"x", 33_333 * i, True), 0.0, lambda: None, new)
        pts = []
        while not queue.empty():
            item = queue.get_nowait()
            assert isinstance(item, VideoPacket)
            pts.append(item.pts)
    assert pts[3] == pts[2] + FRAME_90K
    assert all(b > a for a, b in itertools.pairwise(pts))
