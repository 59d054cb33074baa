"""``playcast worker --backend android`` end to end, with the phone faked.

A real signaling server process, a real worker process running the fake adb
from PATH against the fake device in this process, and the aiortc test peer
as the player. What the peer's H.264 and Opus decoders are handed is compared
with what the device wrote on its video and audio sockets: the same bytes,
nothing re-encoded.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiortc.codecs import h264, opus
from aiortc.jitterbuffer import JitterFrame
from playcast_testing.fake_device import FAKE_ADB, FakeDevice, SentPacket
from playcast_testing.peer import TestPeer
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker

from playcast.backends.audio import CLICK_THRESHOLD
from playcast.backends.nal import (
    config_picture_size,
    has_sps,
)
from playcast.backends.scrcpy import (
    SCRCPY_VERSION,
)

GAME = "com.supercell.clashroyale"
TIMEOUT = 60.0
SERVER = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 5.0,
    "inactivity_timeout": 60.0,
    "inactivity_warning": 0.0,
    "handshake_timeout": 20.0,
    "shutdown_ack_timeout": 5.0,
}


@dataclass
class Rig:
    server: ServerProcess
    worker: WorkerProcess
    phone: FakeDevice
    worker_id: str
    mark: int


@pytest.fixture
def decoder_input(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every access unit the test peer's H.264 decoder is given, in order."""
    seen: list[bytes] = []
    original = h264.H264Decoder.decode

    def decode(self: h264.H264Decoder, frame: JitterFrame) -> list[object]:
        seen.append(bytes(frame.data))
        return list(original(self, frame))

    monkeypatch.setattr(h264.H264Decoder, "decode", decode)
    return seen


@pytest.fixture
def opus_input(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every Opus packet the test peer's decoder is given, in order."""
    seen: list[bytes] = []
    original = opus.OpusDecoder.decode

    def decode(self: opus.OpusDecoder, frame: JitterFrame) -> list[object]:
        seen.append(bytes(frame.data))
        return list(original(self, frame))

    monkeypatch.setattr(opus.OpusDecoder, "decode", decode)
    return seen


@pytest.fixture
def worker_flags() -> tuple[str, ...]:
    """More ``playcast worker`` flags (a test parametrizes this)."""
    return ()


@pytest.fixture
async def rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_flags: tuple[str, ...]
) -> AsyncIterator[Rig]:
    jar = tmp_path / f"scrcpy-server-v{SCRCPY_VERSION}"
    jar.write_bytes(b"PK\x03\x04 not really a jar")
    async with FakeDevice(serial="emulator-5554", screen=(1080, 1920), fps=30) as phone:
        # The worker process inherits these: plain "adb" is the fake one.
        monkeypatch.setenv("PATH", f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}")
        for key, value in phone.env(tmp_path / "adb.log").items():
            monkeypatch.setenv(key, value)
        flags = (
            "--backend", "android",
            "--serial", "emulator-5554",
            "--scrcpy-server", str(jar),
            "--android-max-size", "640",
            "--android-probe-timeout", "2.5",
            "--health-interval", "0.2",
            *worker_flags,
        )  # fmt: skip
        async with (
            asyncio.timeout(TIMEOUT * 3),
            running_server(**SERVER) as server,
            running_worker(server.ws_base, *flags) as worker,
        ):
            mark, worker_id = await worker.wait_registered(timeout=TIMEOUT)
            yield Rig(server, worker, phone, worker_id, mark)


def access_units(sent: Iterable[SentPacket]) -> set[bytes]:
    """What may leave the worker for each device packet: scrcpy's merge, SPS/PPS on IDRs."""
    units = set()
    config = pending = b""
    for p in sent:
        if p.config:
            config = pending = p.payload
        elif pending:
            units.add(pending + p.payload)
            pending = b""
        elif p.keyframe and not has_sps(p.payload):
            units.add(config + p.payload)
        else:
            units.add(p.payload)
    return units


async def test_the_phones_sound_reaches_the_player_unchanged(
    rig: Rig, opus_input: list[bytes]
) -> None:
    phone = rig.phone
    line = next(x for x in rig.worker.lines if "connected to" in x)
    assert "sound: opus" in line
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        await asyncio.wait_for(viewer.first_sound.wait(), TIMEOUT)
        assert viewer.audio_codec == "audio/opus"
        heard = asyncio.ensure_future(viewer.wait_sound(lambda f: f.peak >= CLICK_THRESHOLD))
        await peer.input({"type": "touch", "action": "down", "id": 0, "x": 0.5, "y": 0.5})
        await asyncio.wait_for(heard, TIMEOUT)
        sent = {p.payload for p in phone.sent_audio if not p.config}
        assert len(opus_input) >= 5
        assert all(packet in sent for packet in opus_input)


async def test_a_still_screen_keeps_the_session(rig: Rig) -> None:
    phone = rig.phone
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        phone.hold_still()
        spells = phone.quiet_spells
        # Several quiet spells, each far beyond a frame interval: still playing.
        await phone.wait_until(lambda: phone.quiet_spells >= spells + 3, TIMEOUT)
        assert peer.shutdown is None
        phone.animate()
        seen = viewer.frames_received
        await asyncio.wait_for(viewer.wait_frame(lambda f: f.index >= seen + 10), TIMEOUT)
    assert not any("failed" in line for line in rig.worker.lines[rig.mark :])


async def test_a_session_plays_the_phone(rig: Rig, decoder_input: list[bytes]) -> None:
    phone = rig.phone
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        frame = await asyncio.wait_for(viewer.wait_frame(lambda f: f.index >= 30), TIMEOUT)
        assert (frame.frame.width, frame.frame.height) == (360, 640)

        # The decoder got the device's own bytes, unchanged, from a keyframe on.
        received = list(decoder_input)
        assert len(received) >= 30
        assert config_picture_size(received[0]) == (360, 640)
        sent = access_units(phone.sent)
        assert all(unit in sent for unit in received)

        # Touches land on the phone's screen where the player touched the picture.
        await peer.input({"type": "touch", "action": "down", "id": 0, "x": 0.5, "y": 0.25})
        await peer.input({"type": "touch", "action": "down", "id": 1, "x": 0.1, "y": 0.9})
        await peer.input({"type": "touch", "action": "up", "id": 1, "x": 0.1, "y": 0.9})
        await peer.input({"type": "touch", "action": "up", "id": 0, "x": 0.5, "y": 0.25})
        await peer.input({"type": "key", "action": "down", "key": "Escape"})
        await phone.wait_until(lambda: len(phone.touches()) == 4, TIMEOUT)
        touches = phone.touches()
        assert [(t.action, t.pointer_id) for t in touches] == [(0, 0), (0, 1), (1, 1), (1, 0)]
        assert [(t.width, t.height) for t in touches] == [(360, 640)] * 4
        assert [(t.screen_x, t.screen_y) for t in touches] == [
            (540, 480),
            (108, 1728),
            (108, 1728),
            (540, 480),
        ]
        await phone.wait_until(lambda: any(c.key == (0, 4, 0, 0) for c in phone.controls))

        # The game takes a few polls to come back after the reset.
        phone.launch_polls = 4
        before = len(phone.commands)
        await peer.leave()
        i, _ = await rig.worker.wait_for_log(r"shutdown reason=client_left", after=rig.mark)
    _, new_id = await rig.worker.wait_registered(after=i, timeout=TIMEOUT)
    assert new_id != rig.worker_id
    # Registered again only once the relaunched game was in front.
    assert phone.foreground == GAME
    shell = [" ".join(a[3:]) for a in phone.commands[before:] if a[2] == "shell"]
    stop = shell.index(f"am force-stop {GAME}")
    assert shell[stop + 1] == f"monkey -p {GAME} -c android.intent.category.LAUNCHER 1"
    assert shell[stop + 2 : stop + 6] == ["dumpsys activity activities"] * 4


async def expect_worker_failed(rig: Rig, peer: TestPeer) -> int:
    """The player is told the worker failed; returns the worker log index of the end."""
    await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
    assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
    # The server closes the socket after the peer's ack, so its teardown is over.
    await asyncio.wait_for(peer.socket_closed.wait(), TIMEOUT)
    i, _ = await rig.worker.wait_for_log(r"session \S+ ended", after=rig.mark, timeout=TIMEOUT)
    return i


@pytest.mark.parametrize("failure", ["kill_server", "stall_video"])
async def test_a_dying_phone_ends_the_session_and_the_worker_comes_back(
    rig: Rig, failure: str
) -> None:
    phone = rig.phone
    async with TestPeer.join(rig.server.url) as peer:
        await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        servers = len(phone.servers)
        getattr(phone, failure)()
        i = await expect_worker_failed(rig, peer)
    phone.resume_video()
    _, new_id = await rig.worker.wait_registered(after=i, timeout=TIMEOUT)
    assert new_id != rig.worker_id
    assert len(phone.servers) > servers  # a fresh scrcpy server
    assert len(phone.running_servers()) == 1
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        assert viewer.latest is not None


async def test_an_offline_phone_keeps_the_worker_out_of_the_pool(rig: Rig) -> None:
    phone = rig.phone
    async with TestPeer.join(rig.server.url) as peer:
        await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
        phone.go_offline()
        i = await expect_worker_failed(rig, peer)
    # It retries the device with backoff, and does not register meanwhile.
    j, _ = await rig.worker.wait_for_log(
        r"backend failure \d+ in a row \(reset\): .*offline", after=i
    )
    await rig.worker.wait_for_log(r"backend failure \d+ in a row \(reset\): .*offline", after=j + 1)
    assert not any("registered worker_id" in line for line in rig.worker.lines[i:])
    status = await rig.server.status()
    assert [w for w in status["workers"] if w["status"] == "available"] == []
    phone.go_online()
    _, new_id = await rig.worker.wait_registered(after=i, timeout=TIMEOUT)
    assert new_id != rig.worker_id
    async with TestPeer.join(rig.server.url) as peer:
        await asyncio.wait_for(peer.wait_connected(), TIMEOUT)


def metrics_url(worker: WorkerProcess) -> str:
    m = re.search(r"metrics on (http://\S+)", "\n".join(worker.lines))
    assert m is not None, "the worker logged no metrics address"
    return m.group(1)


# The health poll is far away: only a pushed failure can explain a fast exit.
@pytest.mark.parametrize(
    "worker_flags",
    [("--health-interval", "30", "--backoff-base", "1", "--backoff-cap", "1")],
)
@pytest.mark.parametrize("failure", ["kill_server", "go_offline"])
async def test_a_phone_failing_while_idle_leaves_the_pool_at_once(rig: Rig, failure: str) -> None:
    phone = rig.phone
    failed_at = time.monotonic()
    getattr(phone, failure)()
    await rig.server.wait_for_log(rf"worker_disconnected .*worker={rig.worker_id}")
    noticed = time.monotonic() - failed_at
    async with TestPeer.join(rig.server.url) as peer:
        await asyncio.wait_for(peer.socket_closed.wait(), TIMEOUT)
        assert peer.assigned is None
        assert peer.rejected is not None and peer.rejected.reason == "no_worker_available"
    assert noticed < 1.5, noticed
    i, m = await rig.worker.wait_for_log(r"backend failure 1 in a row \(idle\): (.*);")
    assert "scrcpy server exited" in m.group(1) or "closed" in m.group(1), m.group(0)
    phone.go_online()
    _, new_id = await rig.worker.wait_registered(after=i, timeout=TIMEOUT)
    assert new_id != rig.worker_id
    async with TestPeer.join(rig.server.url) as peer:
        await asyncio.wait_for(peer.wait_connected(), TIMEOUT)


@pytest.mark.parametrize("worker_flags", [("--metrics-port", "0")])
async def test_a_phone_failing_five_times_is_retried_on_the_backoff_schedule(rig: Rig) -> None:
    """Each failure is one log line and a count; the waits follow the full-jitter
    schedule (base 0.05 s, cap 0.5 s in tests); it registers once healthy."""
    rig.phone.go_offline()
    delays = []
    after = rig.mark
    for streak in range(1, 6):
        after, m = await rig.worker.wait_for_log(
            rf"backend failure {streak} in a row \((\w+)\): (.*); (\w+) in ([\d.]+) s",
            after=after,
            timeout=TIMEOUT,
        )
        assert m.group(1) == ("idle" if streak == 1 else "reset"), m.group(0)
        assert m.group(3) == "reset"
        delays.append(float(m.group(4)))
        after += 1
    ceilings = [min(0.5, 0.05 * 2**n) for n in range(5)]
    assert all(d <= c + 0.005 for d, c in zip(delays, ceilings, strict=True)), delays
    assert not any("registered worker_id" in line for line in rig.worker.lines[rig.mark + 1 :])
    async with aiohttp.ClientSession() as http, http.get(metrics_url(rig.worker)) as r:
        metrics = await r.text()
    resets = re.search(rf'backend_failures_total{{game="{GAME}",kind="reset"}} (\S+)', metrics)
    assert resets is not None and float(resets.group(1)) >= 4, metrics
    rig.phone.go_online()
    _, new_id = await rig.worker.wait_registered(after=after, timeout=TIMEOUT)
    assert new_id != rig.worker_id
