"""AndroidBackend against the fake phone: real adb subprocesses, real sockets, real H.264."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from playcast_testing.fake_device import FAKE_ADB, FakeDevice

from playcast.backends.adb import WAKE_AND_UNLOCK
from playcast.backends.android import AndroidBackend, AndroidSettings
from playcast.backends.audio import CLICK_THRESHOLD, AudioPacket, AudioStatus
from playcast.backends.base import BackendError, VideoPacket
from playcast.backends.nal import (
    config_picture_size,
    has_sps,
)
from playcast.backends.scrcpy import (
    DEVICE_SERVER_PATH,
    SCRCPY_VERSION,
    ControlType,
    encode_inject_touch,
    parse_packet_header,
)
from playcast.backends.scrcpy import (
    MotionAction as M,
)

GAME = "com.supercell.clashroyale"
T = 20.0  # generous: a loaded 2-core machine


@pytest.fixture
async def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDevice]:
    async with FakeDevice(serial="emulator-5554", screen=(1080, 1920), fps=30) as dev:
        # The backend runs plain "adb": the fake one, found on PATH.
        monkeypatch.setenv("PATH", f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}")
        for key, value in dev.env(tmp_path / "adb.log").items():
            monkeypatch.setenv(key, value)
        yield dev


@pytest.fixture
def jar(tmp_path: Path) -> Path:
    path = tmp_path / f"scrcpy-server-v{SCRCPY_VERSION}"
    path.write_bytes(b"PK\x03\x04 not really a jar")
    return path


def settings(jar: Path, **kw: object) -> AndroidSettings:
    base: dict[str, object] = dict(
        scrcpy_server=str(jar),
        serial="emulator-5554",
        max_size=640,
        connect_timeout=T,
        quiet_probe=0.5,
        probe_timeout=3.0,
        launch_timeout=T,
        poll_interval=0.02,
        retry_delay=0.02,
    )
    base.update(kw)
    return AndroidSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def backend(device: FakeDevice, jar: Path) -> AsyncIterator[AndroidBackend]:
    b = AndroidBackend(settings(jar))
    await asyncio.wait_for(b.start(), T)
    yield b
    await b.stop()


async def take(it: AsyncIterator[VideoPacket], n: int) -> list[VideoPacket]:
    return [await asyncio.wait_for(anext(it), T) for _ in range(n)]


async def test_start_runs_the_adb_sequence(
    backend: AndroidBackend, device: FakeDevice, tmp_path: Path
) -> None:
    logged = [json.loads(line) for line in (tmp_path / "adb.log").read_text().splitlines()]
    assert sorted(logged) == sorted(device.commands)  # two run at once: either may log first
    assert all(argv[:2] == ["-s", "emulator-5554"] for argv in logged)
    verbs = [argv[2] for argv in logged]
    # The device, the server file and the game first; then the server's start
    # and the game's launch at once.
    assert verbs[:3] == ["get-state", "push", "shell"]
    assert logged[1][3:] == [backend.settings.scrcpy_server, DEVICE_SERVER_PATH]
    assert logged[2][3:] == ["pm", "path", GAME]
    assert device.files[DEVICE_SERVER_PATH]  # the jar arrived
    forward = next(argv for argv in logged if argv[2] == "forward")
    assert forward[3:] == ["tcp:0", f"localabstract:{device.servers[0].socket_name}"]
    # the server was started with what we need from it
    opts = device.servers[0].options
    assert opts["tunnel_forward"] == "true"
    assert opts["audio"] == "true"
    assert opts["audio_codec"] == "opus"
    assert opts["control"] == "true"
    assert opts["clipboard_autosync"] == "false"
    assert device.servers[0].codec_options == {"profile": "1", "i-frame-interval": "2"}
    launch = [c for c in device.shell_commands() if not c.startswith("CLASSPATH=")]
    assert launch[-4:] == [
        WAKE_AND_UNLOCK,
        f"am force-stop {GAME}",
        f"monkey -p {GAME} -c android.intent.category.LAUNCHER 1",
        "dumpsys activity activities",
    ]
    assert device.foreground == GAME
    # the tunnel is removed once both sockets are connected
    assert any(argv[2:4] == ["forward", "--remove"] for argv in logged)
    assert not device.forwards
    assert backend.size == (360, 640)
    assert backend.device_name == "Playcast FakePhone"
    assert (await backend.health()).ok


async def test_video_is_the_devices_h264_unchanged(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    it = aiter(backend.packets())
    packets = await take(it, 12)
    first = packets[0]
    assert first.keyframe
    assert config_picture_size(first.data) == (360, 640)
    # RESET_VIDEO was sent for the new consumer, so a fresh encoder session began
    assert any(c.type == ControlType.RESET_VIDEO for c in device.controls)
    # Each packet is exactly a device packet (config merged in front), in order.
    sent = list(device.sent)
    expected = []
    pending = b""
    for p in sent:
        if p.config:
            pending = p.payload
        else:
            expected.append(pending + p.payload)
            pending = b""
    start = expected.index(first.data)
    assert [p.data for p in packets] == expected[start : start + len(packets)]
    assert [p.keyframe for p in packets[1:]] == [False] * 11
    assert all(b.pts > a.pts for a, b in itertools.pairwise(packets))
    # A real decoder takes it as is.
    codec = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in codec.decode(av.Packet(p.data))]
    assert frames and (frames[0].width, frames[0].height) == (360, 640)
    await it.aclose()


async def test_periodic_keyframes_carry_parameter_sets(jar: Path, device: FakeDevice) -> None:
    b = AndroidBackend(settings(jar, keyframe_interval=1))
    await asyncio.wait_for(b.start(), T)
    try:
        it = aiter(b.packets())
        packets = await take(it, 2 * device.fps + 5)  # past the next IDR
        keyframes = [p for p in packets if p.keyframe]
        assert len(keyframes) >= 2
        # the device sent the later IDR without SPS/PPS; we put them in front
        later = keyframes[1].data
        assert config_picture_size(later) == (360, 640)
        original = [p.payload for p in device.sent if p.keyframe and later.endswith(p.payload)]
        assert original and not has_sps(original[0])
        configs = [p.payload for p in device.sent if p.config]
        assert later == configs[-1] + original[0]  # the encoder session's config
        await it.aclose()
    finally:
        await b.stop()


async def test_touches_reach_the_device_at_screen_coordinates(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    await backend.inject_touch("down", 0, 0.5, 0.25)
    await backend.inject_touch("down", 3, 0.1, 0.9)  # a second finger
    await backend.inject_touch("move", 0, 0.75, 0.5)
    await backend.inject_touch("up", 3, 0.1, 0.9)
    await backend.inject_touch("cancel", 0, 0.75, 0.5)
    await device.wait_until(lambda: len(device.touches()) == 5, T)
    t = device.touches()
    assert [(x.action, x.pointer_id) for x in t] == [(0, 0), (0, 3), (2, 0), (1, 3), (1, 0)]
    assert all((x.width, x.height) == (360, 640) for x in t)
    assert [(x.x, x.y) for x in t] == [(180, 160), (36, 576), (270, 320), (36, 576), (270, 320)]
    assert [(x.screen_x, x.screen_y) for x in t] == [
        (540, 480),
        (108, 1728),
        (810, 960),
        (108, 1728),
        (810, 960),
    ]
    assert [x.pressure for x in t] == [0xFFFF, 0xFFFF, 0xFFFF, 0, 0]


async def test_stray_moves_are_not_sent_and_reset_lifts_fingers(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    await backend.inject_touch("move", 5, 0.5, 0.5)  # never went down
    await backend.inject_touch("up", 6, 0.5, 0.5)
    await backend.inject_touch("down", 1, 0.5, 0.5)
    await device.wait_until(lambda: len(device.touches()) == 1, T)
    await asyncio.wait_for(backend.reset(), T)
    await device.wait_until(lambda: len(device.touches()) == 2, T)
    assert [(x.action, x.pointer_id) for x in device.touches()] == [(0, 1), (1, 1)]


async def test_keys_become_keycodes(backend: AndroidBackend, device: FakeDevice) -> None:
    await backend.inject_key("down", "Escape")
    await backend.inject_key("up", "Escape")
    await backend.inject_key("down", "Unidentified")  # not sent
    await backend.inject_key("down", "A")
    await device.wait_until(lambda: sum(c.key is not None for c in device.controls) == 3, T)
    keys = [c.key for c in device.controls if c.key is not None]
    assert keys == [(0, 4, 0, 0), (1, 4, 0, 0), (0, 29, 0, 0x41)]


async def test_rotation_is_followed(backend: AndroidBackend, device: FakeDevice) -> None:
    it = aiter(backend.packets())
    await take(it, 2)
    device.rotate()
    async with asyncio.timeout(T):
        while True:
            p = await anext(it)
            if p.keyframe and config_picture_size(p.data) == (640, 360):
                break
    assert backend.size == (640, 360)
    await backend.inject_touch("down", 0, 0.5, 0.5)
    await device.wait_until(lambda: bool(device.touches()), T)
    touch = device.touches()[0]
    assert (touch.width, touch.height) == (640, 360)
    assert (touch.screen_x, touch.screen_y) == (960, 540)  # not ignored by the device
    await it.aclose()


async def test_request_keyframe_sends_reset_video_once_until_it_comes(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    it = aiter(backend.packets())
    await take(it, 3)
    sessions = device.encoder_sessions
    before = sum(c.type == ControlType.RESET_VIDEO for c in device.controls)
    backend.request_keyframe()
    backend.request_keyframe()  # coalesced: one encoder restart is enough
    async with asyncio.timeout(T):
        while not (await anext(it)).keyframe:
            pass
    after = sum(c.type == ControlType.RESET_VIDEO for c in device.controls)
    assert after == before + 1
    assert device.encoder_sessions == sessions + 1
    resets = [c.raw for c in device.controls if c.type == ControlType.RESET_VIDEO]
    assert set(resets) == {b"\x11"}
    await it.aclose()


async def test_reset_relaunches_and_waits_for_the_foreground(jar: Path, device: FakeDevice) -> None:
    device.launch_polls = 3  # the game takes a while to come up
    b = AndroidBackend(settings(jar))
    await asyncio.wait_for(b.start(), T)
    try:
        n = len(device.commands)
        device.foreground = "com.android.settings"  # the player wandered off
        await asyncio.wait_for(b.reset(), T)
        shell = [" ".join(argv[3:]) for argv in device.commands[n:]]
        assert shell[:3] == [
            WAKE_AND_UNLOCK,
            f"am force-stop {GAME}",
            f"monkey -p {GAME} -c android.intent.category.LAUNCHER 1",
        ]
        assert shell[3:] == ["dumpsys activity activities"] * 3
        assert device.foreground == GAME
        assert len(device.servers) == 1  # the healthy scrcpy link was kept
    finally:
        await b.stop()


async def test_a_locked_phone_is_woken_and_unlocked_before_the_game_launches(
    jar: Path, device: FakeDevice
) -> None:
    device.lock()  # the screen timed out: dark, behind a swipe lock
    b = AndroidBackend(settings(jar))
    await asyncio.wait_for(b.start(), T)
    try:
        assert device.screen_on and not device.keyguard_showing
        assert device.foreground == GAME  # not stuck behind the lock screen
        shell = device.shell_commands()
        assert shell.index(WAKE_AND_UNLOCK) < shell.index(f"am force-stop {GAME}")
        # Every relaunch does it again: a phone locked by hand between players.
        device.lock()
        await asyncio.wait_for(b.reset(), T)
        assert device.screen_on and not device.keyguard_showing and device.foreground == GAME
    finally:
        await b.stop()
    # A PIN cannot be dismissed: the game cannot come to the front, and the
    # backend says so rather than serve a lock screen.
    device.lock(secure=True)
    b = AndroidBackend(settings(jar, launch_timeout=0.5))
    await asyncio.wait_for(b.start(), T)
    try:
        health = await b.health()
        assert not health.ok and "not in the foreground" in health.detail
        assert device.screen_on and device.keyguard_showing
    finally:
        await b.stop()


@pytest.mark.parametrize("failure", ["kill_server", "go_offline", "stall_video"])
async def test_failures_end_the_stream_and_reset_recovers(
    jar: Path, device: FakeDevice, failure: str
) -> None:
    b = AndroidBackend(settings(jar, probe_timeout=2.0))
    await asyncio.wait_for(b.start(), T)
    try:
        it = aiter(b.packets())
        await take(it, 2)
        getattr(device, failure)()
        with pytest.raises(BackendError):
            async with asyncio.timeout(T):
                while True:
                    await anext(it)
        health = await b.health()
        assert not health.ok and health.detail
        # input while broken is dropped, not raised
        await b.inject_touch("down", 0, 0.5, 0.5)
        if failure == "go_offline":
            with pytest.raises(BackendError, match="offline"):
                await asyncio.wait_for(b.reset(), T)
            device.go_online()
        device.resume_video()
        await asyncio.wait_for(b.reset(), T)
        assert len(device.running_servers()) == 1
        assert device.servers[-1] is not device.servers[0]
        assert (await b.health()).ok
        it2 = aiter(b.packets())
        assert (await take(it2, 1))[0].keyframe
        await it2.aclose()
    finally:
        await b.stop()
    assert not device.running_servers()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"scrcpy_version": "3.3.1"}, "does not match"),
        ({"game": "com.example.none"}, "not installed"),
        ({"serial": "R5CT1234"}, "missing"),
    ],
)
async def test_an_unusable_device_is_unhealthy_until_reset_works(
    jar: Path, device: FakeDevice, change: dict[str, str], error: str
) -> None:
    # start() does not give up on a device: the worker retries it with reset()
    b = AndroidBackend(settings(jar, **change))
    await asyncio.wait_for(b.start(), T)
    health = await b.health()
    assert not health.ok and error in health.detail
    with pytest.raises(BackendError, match=error):
        await asyncio.wait_for(b.reset(), T)
    assert not device.running_servers()
    await b.stop()


async def test_settings_no_retry_can_fix_fail_start(jar: Path, device: FakeDevice) -> None:
    with pytest.raises(BackendError, match="not found"):
        await asyncio.wait_for(AndroidBackend(settings(jar.with_name("nope"))).start(), T)
    with pytest.raises(BackendError, match="unsafe"):
        await AndroidBackend(settings(jar, codec_options="a=1;reboot")).start()
    assert device.commands == []


async def test_device_that_comes_online_later(jar: Path, device: FakeDevice) -> None:
    device.go_offline()
    b = AndroidBackend(settings(jar))
    await asyncio.wait_for(b.start(), T)
    assert not (await b.health()).ok
    device.go_online()
    await asyncio.wait_for(b.reset(), T)
    assert (await b.health()).ok
    await b.stop()


async def test_stop_is_idempotent_and_ends_the_consumer(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    it = aiter(backend.packets())
    await take(it, 1)
    await backend.stop()
    await backend.stop()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(T):
            while True:
                await anext(it)
    await device.wait_until(lambda: not device.running_servers(), T)


@contextlib.asynccontextmanager
async def phone(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> AsyncIterator[FakeDevice]:
    """A fake phone of its own (screen, audio capture), for one test."""
    async with FakeDevice(serial="emulator-5554", **kw) as dev:
        monkeypatch.setenv("PATH", f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}")
        for key, value in dev.env().items():
            monkeypatch.setenv(key, value)
        yield dev


@pytest.mark.parametrize(
    ("screen", "max_size", "expected"),
    [
        # Size.limit() then round8(), worked by hand from device/Size.java.
        ((1080, 2400), 1280, (576, 1280)),
        ((1080, 1920), 640, (360, 640)),
        ((1084, 2400), 0, (1088, 2400)),  # no limit: minor to the nearest 8
        ((2340, 1080), 0, (2336, 1080)),  # major down to a multiple of 8
        ((720, 1600), 1024, (464, 1024)),  # 460.8 -> 460 -> 464
    ],
)
async def test_video_size_is_the_one_the_server_computes(
    jar: Path,
    monkeypatch: pytest.MonkeyPatch,
    screen: tuple[int, int],
    max_size: int,
    expected: tuple[int, int],
) -> None:
    async with phone(monkeypatch, screen=screen, fps=5) as device:
        b = AndroidBackend(settings(jar, max_size=max_size, audio=False))
        await asyncio.wait_for(b.start(), T)
        try:
            assert b.size == expected  # from the codec header on the wire
            it = aiter(b.packets())
            assert config_picture_size((await take(it, 1))[0].data) == expected
            await it.aclose()
            if expected == (576, 1280):
                # AffineMatrix.apply truncates: pixel (1, 1) of 576x1280 is
                # screen (1.875, 1.875), so (1, 1), never (2, 2).
                await b.inject_touch("down", 0, 1.5 / 576, 1.5 / 1280)
                await device.wait_until(lambda: bool(device.touches()), T)
                touch = device.touches()[0]
                assert (touch.x, touch.y, touch.screen_x, touch.screen_y) == (1, 1, 1, 1)
        finally:
            await b.stop()


async def test_pointer_ids_are_signed_and_ten_fingers_at_most(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    for finger in range(11):
        await backend.inject_touch("down", finger, 0.5, 0.5)
    await device.wait_until(lambda: len(device.touches()) == 10, T)
    # The 11th finger never went out; lifting it sends nothing either.
    await backend.inject_touch("up", 10, 0.5, 0.5)
    await backend.inject_touch("up", 0, 0.5, 0.5)
    await device.wait_until(lambda: len(device.touches()) == 11, T)
    assert [x.pointer_id for x in device.touches()] == [*range(10), 0]
    # The device reads the id as a Java long: POINTER_ID_GENERIC_FINGER is -2.
    # With nine fingers down, -2 is the tenth and a further one is ignored.
    link = backend._usable_link()
    assert link is not None
    link.control.write(encode_inject_touch(M.DOWN, -2, 1, 1, 360, 640, 1.0))
    link.control.write(encode_inject_touch(M.DOWN, 0x7FFF_0000, 1, 1, 360, 640, 1.0))
    await device.wait_until(lambda: len(device.touches()) == 13, T)
    generic, extra = device.touches()[-2:]
    assert generic.pointer_id == -2 and generic.screen_x == 3
    assert extra.pointer_id == 0x7FFF_0000 and extra.screen_x is None  # ignored


async def test_a_still_screen_is_probed_not_failed(jar: Path, device: FakeDevice) -> None:
    b = AndroidBackend(settings(jar, quiet_probe=0.3, probe_timeout=3.0))
    await asyncio.wait_for(b.start(), T)
    try:
        it = aiter(b.packets())
        await take(it, 3)
        device.hold_still()
        spells = device.quiet_spells

        async def consume() -> None:
            while True:
                await anext(it)

        consumer = asyncio.create_task(consume())
        # The phone goes quiet again and again; each probe gets its answer.
        await device.wait_until(lambda: device.quiet_spells >= spells + 3, T)
        assert not consumer.done()
        assert (await b.health()).ok
        link = b._usable_link()
        assert link is not None and link.probes >= 2
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await it.aclose()
        device.animate()
        it = aiter(b.packets())
        assert len(await take(it, 5)) == 5
        await it.aclose()
    finally:
        await b.stop()


async def test_a_new_player_on_a_still_screen_gets_a_picture_at_once(
    jar: Path, device: FakeDevice
) -> None:
    # Probing is far off: only the keyframe request at session start can answer.
    b = AndroidBackend(settings(jar, quiet_probe=30.0))
    await asyncio.wait_for(b.start(), T)
    try:
        device.hold_still()
        await device.wait_until(lambda: device.quiet_spells >= 1, T)
        it = aiter(b.packets())
        first = await asyncio.wait_for(anext(it), T)
        assert first.keyframe and config_picture_size(first.data) == (360, 640)
        await it.aclose()
    finally:
        await b.stop()


def _peaks(packets: list[bytes]) -> list[float]:
    codec = av.CodecContext.create("libopus", "r")
    out = []
    for data in packets:
        for frame in codec.decode(av.Packet(data)):
            out.append(float(np.abs(frame.to_ndarray()).max()))
    return out


async def test_sound_is_the_phones_opus_unchanged(
    backend: AndroidBackend, device: FakeDevice
) -> None:
    assert backend.audio_status == AudioStatus("opus", "from the phone")
    it = aiter(backend.audio_packets())
    first = await take_audio(it, 5)
    await backend.inject_touch("down", 0, 0.5, 0.5)
    rest = await take_audio(it, 10)
    got = first + rest
    sent = [p for p in device.sent_audio if not p.config]
    assert device.sent_audio[0].config and device.sent_audio[0].payload.startswith(b"OpusHead")
    # The packets are the device's, in order, bytes intact (the hum repeats
    # itself, so look for the whole run, not the first packet alone).
    n = len(got)
    runs = [
        i
        for i in range(len(sent) - n + 1)
        if [p.payload for p in sent[i : i + n]] == [p.data for p in got]
    ]
    assert runs
    start = runs[-1]
    # PTS: the device's microseconds on the 48 kHz clock.
    pts_us = [parse_packet_header(p.header).pts_us for p in sent[start : start + len(got)]]
    assert [p.pts for p in got] == [us * 6 // 125 for us in pts_us]
    peaks = _peaks([p.data for p in got])
    assert max(peaks[:5]) < CLICK_THRESHOLD * 32768 < max(peaks[5:])
    await it.aclose()


async def take_audio(it: AsyncIterator[AudioPacket], n: int) -> list[AudioPacket]:
    return [await asyncio.wait_for(anext(it), T) for _ in range(n)]


async def test_an_old_phone_plays_video_without_sound(
    jar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with phone(monkeypatch, audio_capture="disabled", fps=10) as device:
        b = AndroidBackend(settings(jar))
        await asyncio.wait_for(b.start(), T)
        try:
            assert device.servers[-1].options["audio"] == "true"
            status = b.audio_status
            assert status.codec is None and "Android 10" in status.detail
            assert [p async for p in b.audio_packets()] == []
            it = aiter(b.packets())
            assert len(await take(it, 3)) == 3
            await it.aclose()
            assert (await b.health()).ok
        finally:
            await b.stop()


async def test_an_audio_configuration_error_reconnects_video_only(
    jar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with phone(monkeypatch, audio_capture="error", fps=10) as device:
        b = AndroidBackend(settings(jar))
        await asyncio.wait_for(b.start(), T)
        try:
            assert (await b.health()).ok
            assert [s.options["audio"] for s in device.servers] == ["true", "false"]
            assert b.audio_status.codec is None
            assert "configuration error" in b.audio_status.detail
            it = aiter(b.packets())
            assert len(await take(it, 3)) == 3
            await it.aclose()
        finally:
            await b.stop()


async def test_no_audio_asks_the_server_for_none(jar: Path, device: FakeDevice) -> None:
    b = AndroidBackend(settings(jar, audio=False))
    await asyncio.wait_for(b.start(), T)
    try:
        assert device.servers[-1].options["audio"] == "false"
        assert b.audio_status == AudioStatus(None, "turned off")
        it = aiter(b.packets())
        assert len(await take(it, 2)) == 2
        await it.aclose()
    finally:
        await b.stop()


async def test_a_second_consumer_is_a_backend_error(backend: AndroidBackend) -> None:
    # The video track handles BackendError; a RuntimeError here used to escape it.
    first = aiter(backend.packets())
    await take(first, 1)
    with pytest.raises(BackendError, match="already has a consumer"):
        await anext(aiter(backend.packets()))
