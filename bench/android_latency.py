"""The Android backend's own added delay, with the fake phone.

Runs the worker's media path in this process: AndroidBackend (real adb
subprocesses: tests/fake_adb/adb, against the fake device), the worker's
BackendVideoTrack on an aiortc peer connection, and its ``input`` data
channel feeding the backend, with the aiortc test viewer on the other end over
loopback (receiving only: decoding is the browser's work). The fake device runs
in a process of its own, as a phone is its own machine. Two delays, both on the one monotonic clock:

- video: a packet written on the device's video socket, to the last RTP packet
  of that access unit handed to the worker's DTLS transport (read, parse,
  merge, queue, track, packetize, encrypt, send);
- touch: the worker's data channel delivering a touch, to the device having
  parsed the INJECT_TOUCH_EVENT it became (decode, map, encode, socket);
- audio: an Opus packet written on the device's audio socket, to its RTP
  packet handed to the worker's DTLS transport (read, queue, track, RTP wrap,
  encrypt, send: no decoding, no re-encoding).

    .venv/bin/python bench/android_latency.py            # full: 20 s of video, 2000 touches
    .venv/bin/python bench/android_latency.py --quick    # CI: well under 30 s
    .venv/bin/python bench/android_latency.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import h264
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from av.frame import Frame
from playcast_testing.fake_device import FAKE_ADB, FakeDevice
from playcast_testing.peer import Viewer

from playcast.backends.android import AndroidBackend, AndroidSettings
from playcast.backends.audio import GameAudio
from playcast.backends.base import GameBackend
from playcast.backends.scrcpy import SCRCPY_VERSION
from playcast.inputs import Touch, decode_input
from playcast.worker.media import (
    BackendAudioTrack,
    BackendVideoTrack,
    add_audio_sender,
    add_video_sender,
)

TARGETS = {
    "video_p50_ms": 2.0,
    "video_p95_ms": 2.0,
    "touch_p50_ms": 2.0,
    "touch_p95_ms": 2.0,
    "audio_p50_ms": 2.0,
    "audio_p95_ms": 2.0,
}
WARMUP_FRAMES = 10  # connection set-up and the first keyframe are not steady state


def phone_process(conn: Connection, fps: int) -> None:
    """The fake phone, in a process of its own as a phone is its own machine."""

    async def main() -> None:
        async with FakeDevice(screen=(1080, 2400), fps=fps) as dev:
            conn.send(dev.endpoint)
            touches_expected: int = await asyncio.to_thread(conn.recv)
            with contextlib.suppress(TimeoutError):  # a shortfall is reported by the bench
                await dev.wait_until(lambda: len(dev.touches()) >= touches_expected, 10)
            sent = [(p.header, p.sent_at) for p in dev.sent if not p.config]
            sound = [(p.header, p.sent_at) for p in dev.sent_audio if not p.config]
            touched = [c.received_at for c in dev.controls if c.touch is not None]
            conn.send((sent, sound, touched))
            await asyncio.to_thread(conn.recv)  # stay up until the worker has let go

    asyncio.run(main())


class TimedTrack(BackendVideoTrack):
    """Remembers the PTS of each access unit in the order the sender takes them."""

    def __init__(self, backend: GameBackend, on_failure: Callable[[str], None]) -> None:
        super().__init__(backend, on_failure)
        self.order: deque[int] = deque()

    async def recv(self) -> Any:
        packet = await super().recv()
        self.order.append(int(packet.pts or 0))
        return packet


class TimedAudioTrack(BackendAudioTrack):
    """Remembers the PTS of each Opus packet in the order the sender takes them."""

    def __init__(self, audio: GameAudio) -> None:
        super().__init__(audio)
        self.order: deque[int] = deque()

    async def recv(self) -> Any:
        packet = await super().recv()
        self.order.append(int(packet.pts or 0))
        return packet


def time_rtp(
    track_ref: list[TimedTrack],
    marks: list[tuple[float, int]],
    on_mark: Callable[[], None],
    audio_ref: list[tuple[TimedAudioTrack, int]],
    audio_marks: list[tuple[float, int]],
) -> None:
    """Note when the last RTP packet (marker bit) of each access unit leaves,
    and each Opus packet (one RTP packet each, told apart by payload type)."""
    original: Callable[[RTCDtlsTransport, bytes], Awaitable[None]] = RTCDtlsTransport._send_rtp

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        await original(self, data)
        if audio_ref and data[1] & 0x7F == audio_ref[0][1]:
            if audio_ref[0][0].order:
                audio_marks.append((time.monotonic(), audio_ref[0][0].order.popleft()))
            return
        if track_ref and data[1] & 0x80 and track_ref[0].order:
            marks.append((time.monotonic(), track_ref[0].order.popleft()))
            on_mark()

    RTCDtlsTransport._send_rtp = send_rtp  # type: ignore[method-assign]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    conn, child_conn = multiprocessing.Pipe()
    phone = multiprocessing.get_context("spawn").Process(
        target=phone_process, args=(child_conn, args.fps), daemon=True
    )
    phone.start()
    endpoint: str = await asyncio.to_thread(conn.recv)
    tmp = Path(tempfile.mkdtemp(prefix="playcast-bench-"))
    jar = tmp / f"scrcpy-server-v{SCRCPY_VERSION}"
    jar.write_bytes(b"PK\x03\x04 fake")
    os.environ["PATH"] = f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["PLAYCAST_FAKE_ADB_DEVICE"] = endpoint
    backend = AndroidBackend(
        AndroidSettings(scrcpy_server=str(jar), max_size=args.max_size, poll_interval=0.05)
    )
    await backend.start()

    marks: list[tuple[float, int]] = []
    audio_marks: list[tuple[float, int]] = []
    track_ref: list[TimedTrack] = []
    audio_ref: list[tuple[TimedAudioTrack, int]] = []
    warm = asyncio.Event()
    time_rtp(
        track_ref,
        marks,
        lambda: None if len(marks) <= WARMUP_FRAMES else warm.set(),
        audio_ref,
        audio_marks,
    )
    failures: list[str] = []
    worker_pc = RTCPeerConnection()
    track = TimedTrack(backend, failures.append)
    track_ref.append(track)
    # The worker's own set-up of its senders (no playout delay; levels: none from a phone).
    add_video_sender(worker_pc, track, backend)
    audio_track = TimedAudioTrack(backend)
    audio_transceiver = add_audio_sender(worker_pc, audio_track)
    channel = worker_pc.createDataChannel("input", ordered=True)
    inputs: asyncio.Queue[str | bytes] = asyncio.Queue()
    delivered: list[float] = []

    def on_message(data: str | bytes) -> None:
        delivered.append(time.monotonic())
        inputs.put_nowait(data)

    channel.on("message", on_message)

    async def run_inputs() -> None:  # what the worker's session does with each message
        while True:
            event = decode_input(await inputs.get())
            if isinstance(event, Touch):
                await backend.inject_touch(event.action, event.id, event.x, event.y)

    input_task = asyncio.create_task(run_inputs())

    # The viewer only has to receive: decoding would be the browser's work, and
    # here it would hold the GIL that the worker and the phone need.
    def no_decode(self: h264.H264Decoder, encoded_frame: JitterFrame) -> list[Frame]:
        return []

    h264.H264Decoder.decode = no_decode  # type: ignore[method-assign]
    viewer = Viewer([])
    await worker_pc.setLocalDescription(await worker_pc.createOffer())
    answer, _ = await viewer.answer(worker_pc.localDescription.sdp, trickle=False)
    await worker_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    audio_ref.append((audio_track, audio_transceiver._codecs[0].payloadType))
    async with asyncio.timeout(30):
        await viewer.connected.wait()
        await viewer.channel_open.wait()
        await warm.wait()

    # Video: let it stream.
    await asyncio.sleep(args.seconds)
    video_marks = list(marks)
    sound_marks = list(audio_marks)

    # Touch: down/up pairs, spaced so each is handled on its own.
    delivered.clear()
    for i in range(args.touches):
        action = "down" if i % 2 == 0 else "up"
        viewer.send_input({"type": "touch", "action": action, "id": 0, "x": 0.5, "y": 0.5})
        await asyncio.sleep(args.touch_gap)
    conn.send(args.touches)  # the phone answers once it has them all (or gives up)
    sent, sound, touched = await asyncio.to_thread(conn.recv)

    input_task.cancel()
    await viewer.close()
    await worker_pc.close()
    await track.aclose()
    await audio_track.aclose()
    await backend.stop()
    conn.send(None)
    phone.join(timeout=30)

    # Device write time of each access unit, by its PTS on the 90 kHz clock.
    written: dict[int, float] = {}
    for header, sent_at in sent:
        (flags,) = struct.unpack(">Q", header[:8])
        written[(flags & ((1 << 62) - 1)) * 9 // 100] = sent_at
    video_ms = [
        (t - written[pts]) * 1000 for t, pts in video_marks[WARMUP_FRAMES:] if pts in written
    ]
    touch_ms = [(r - t) * 1000 for r, t in zip(touched, delivered, strict=False)]
    # Device write time of each Opus packet, by its PTS on the 48 kHz clock.
    spoken: dict[int, float] = {}
    for header, sent_at in sound:
        (flags,) = struct.unpack(">Q", header[:8])
        spoken[(flags & ((1 << 62) - 1)) * 6 // 125] = sent_at
    audio_ms = [(t - spoken[pts]) * 1000 for t, pts in sound_marks[5:] if pts in spoken]
    if not video_ms or not audio_ms or len(touch_ms) != args.touches or failures:
        raise SystemExit(
            f"incomplete run: {len(video_ms)} frames, {len(audio_ms)} sound packets, "
            f"{len(touch_ms)}/{args.touches} touches, failures {failures}"
        )
    return {
        "frames": len(video_ms),
        "touches": len(touch_ms),
        "video_size": list(backend.size),
        "video_p50_ms": percentile(video_ms, 50),
        "video_p95_ms": percentile(video_ms, 95),
        "video_max_ms": max(video_ms),
        "touch_p50_ms": percentile(touch_ms, 50),
        "touch_p95_ms": percentile(touch_ms, 95),
        "touch_max_ms": max(touch_ms),
        "video_mean_ms": statistics.fmean(video_ms),
        "sound_packets": len(audio_ms),
        "audio_p50_ms": percentile(audio_ms, 50),
        "audio_p95_ms": percentile(audio_ms, 95),
        "audio_max_ms": max(audio_ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for CI (< 30 s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--fps", type=int, default=60, help="the fake phone's frame rate")
    parser.add_argument("--max-size", type=int, default=1280, help="video's longest side")
    args = parser.parse_args()
    args.seconds = 5.0 if args.quick else 20.0
    args.touches = 400 if args.quick else 2000
    args.touch_gap = 0.005
    started = time.monotonic()
    result = asyncio.run(bench(args))
    print(f"Android backend added delay (fake phone, {args.fps} fps, {result['video_size']}):")
    print(
        f"  video  device socket -> last RTP packet out: p50 {result['video_p50_ms']:.3f} ms"
        f"  p95 {result['video_p95_ms']:.3f} ms  max {result['video_max_ms']:.3f} ms"
        f"  ({result['frames']} frames)"
    )
    print(
        f"  touch  data channel -> control message at device: p50 {result['touch_p50_ms']:.3f} ms"
        f"  p95 {result['touch_p95_ms']:.3f} ms  max {result['touch_max_ms']:.3f} ms"
        f"  ({result['touches']} touches)"
    )
    print(
        f"  audio  device socket -> RTP packet out: p50 {result['audio_p50_ms']:.3f} ms"
        f"  p95 {result['audio_p95_ms']:.3f} ms  max {result['audio_max_ms']:.3f} ms"
        f"  ({result['sound_packets']} Opus packets)"
    )
    missed = [k for k, limit in TARGETS.items() if result[k] > limit]
    print(f"  targets (< 2 ms): {'met' if not missed else 'missed: ' + ', '.join(missed)}")
    print(f"  took {time.monotonic() - started:.1f} s")
    print(json.dumps(result))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
