"""The phone's media on their way to the worker: the pumps that read the
video and audio sockets, the probe that tells a still screen from a dead
one, and the feeds that hand packets to their one consumer.

Nothing is decoded or re-encoded: the video goes out as the phone's H.264
access units (config packets merged into the next one, as scrcpy does), the
sound as its Opus packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Final, Generic, TypeVar

from playcast.backends.android.settings import AndroidSettings
from playcast.backends.android.sockets import ScrcpyLink
from playcast.backends.audio import AudioPacket, AudioStatus
from playcast.backends.base import VideoPacket
from playcast.backends.nal import (
    config_picture_size,
)
from playcast.backends.scrcpy import (
    PACKET_HEADER_SIZE,
    MediaPacket,
    PacketMerger,
    ProtocolError,
    parse_packet_header,
)

log = logging.getLogger("playcast.android")

# Frames waiting for a slow consumer before we drop them and restart from a
# keyframe: queueing more only adds latency.
MAX_QUEUED: Final = 30
# Sound waiting for a slow consumer: older packets are dropped beyond this
# (200 ms), since late sound is worse than a gap.
MAX_AUDIO_QUEUED: Final = 10

T = TypeVar("T")


class _Feed(Generic[T]):
    """A queue to the one consumer there may be; None in it ends the stream."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T | None] | None = None

    @property
    def consumed(self) -> bool:
        return self._queue is not None

    @contextlib.contextmanager
    def consumer(self) -> Iterator[asyncio.Queue[T | None]]:
        queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._queue = queue
        try:
            yield queue
        finally:
            if self._queue is queue:
                self._queue = None

    def end(self) -> None:
        if self._queue is not None:
            self._queue.put_nowait(None)


# A picture's length when a new server's timestamps are joined to the last (30 fps).
FRAME_90K: Final = 3000


class VideoFeed(_Feed[VideoPacket | BaseException]):
    """The video's consumer starts at a keyframe, and one that falls behind
    starts over at the next keyframe rather than let the queue grow.

    When the pictures start coming from another server (the ladder restarted
    the phone's video), their timestamps must follow on from the last: the
    browser would take a timestamp that goes back for a late picture. A
    phone's come from its monotonic clock and do; a server that counted from
    its own start would not, and is shifted to follow on."""

    def __init__(self) -> None:
        super().__init__()
        self.awaiting_keyframe = False
        self._source: object | None = None
        self._offset = 0
        self._last_pts: int | None = None

    def fail(self, error: BaseException) -> None:
        if self._queue is not None:
            self._queue.put_nowait(error)

    def deliver(
        self,
        packet: MediaPacket,
        now: float,
        ask_keyframe: Callable[[], None],
        source: object = None,
    ) -> None:
        # Device PTS is in microseconds; the video clock is 90 kHz.
        pts = packet.pts_us * 9 // 100
        if source is not self._source:
            last = self._last_pts
            if self._source is not None and last is not None and pts + self._offset <= last:
                self._offset = last + FRAME_90K - pts
            self._source = source
        pts += self._offset
        self._last_pts = pts
        queue = self._queue
        if queue is None:
            return
        if not self.awaiting_keyframe and queue.qsize() >= MAX_QUEUED:
            log.warning("video consumer is %d frames behind; restarting at a keyframe", MAX_QUEUED)
            while not queue.empty():
                queue.get_nowait()
            self.awaiting_keyframe = True
            ask_keyframe()
        if self.awaiting_keyframe:
            if not packet.keyframe:
                return
            self.awaiting_keyframe = False
        queue.put_nowait(VideoPacket(packet.data, pts, packet.keyframe, now))


class AudioFeed(_Feed[AudioPacket]):
    """Sound to its consumer; the oldest goes first when it falls behind."""

    def deliver(self, payload: bytes, pts_us: int) -> None:
        queue = self._queue
        if queue is None:
            return
        while queue.qsize() >= MAX_AUDIO_QUEUED:
            queue.get_nowait()
        # Device PTS is in microseconds; the audio clock is 48 kHz.
        queue.put_nowait(AudioPacket(payload, pts_us * 6 // 125, time.monotonic()))


async def read_video(
    link: ScrcpyLink,
    deliver: Callable[[MediaPacket, float], None],
    resized: Callable[[tuple[int, int]], None],
    fail: Callable[[str], None],
) -> None:
    """Video packets, merged as scrcpy does, to ``deliver``; a new picture size
    (rotation, resize) to ``resized``."""
    merger = PacketMerger()
    reader = link.video
    config_pending = False
    try:
        while True:
            header = parse_packet_header(await reader.readexactly(PACKET_HEADER_SIZE))
            payload = await reader.readexactly(header.size)
            now = time.monotonic()
            link.last_packet = now
            link.video_seen.set()
            if header.config:
                config_pending = True
            elif header.keyframe and config_pending:
                config_pending = False
                link.fresh_session.set()
            if header.config:
                size = config_picture_size(payload)
                if size is not None:
                    resized(size)
            packet = merger.feed(header, payload)
            if packet is not None:
                if packet.keyframe:
                    link.keyframe_asked_at = None
                deliver(packet, now)
    except asyncio.IncompleteReadError:
        fail("the device closed the video socket")
    except (OSError, ProtocolError) as exc:
        fail(f"video socket: {exc}")


async def watch_video(
    link: ScrcpyLink,
    settings: AndroidSettings,
    probe: Callable[[], None],
    fail: Callable[[str], None],
) -> None:
    """Silence is a still screen until a RESET_VIDEO probe goes unanswered."""
    s = settings
    while not link.failed:
        link.video_seen.clear()
        try:
            async with asyncio.timeout(s.quiet_probe):
                await link.video_seen.wait()
            continue
        except TimeoutError:
            pass
        link.fresh_session.clear()
        link.probes += 1
        link.keyframe_asked_at = time.monotonic()
        probe()
        try:
            async with asyncio.timeout(s.probe_timeout):
                await link.fresh_session.wait()
        except TimeoutError:
            fail(
                f"video silent and RESET_VIDEO unanswered for {s.probe_timeout:g}s:"
                " the device's encoder is gone"
            )
            return


async def read_audio(
    link: ScrcpyLink,
    reader: asyncio.StreamReader,
    current: Callable[[], bool],
    feed: AudioFeed,
) -> None:
    """Opus packets (after the OpusHead config packet) to the sound's feed,
    while ``link`` is the backend's ``current`` one."""
    try:
        while True:
            header = parse_packet_header(await reader.readexactly(PACKET_HEADER_SIZE))
            payload = await reader.readexactly(header.size)
            if header.config or not current():
                continue  # the OpusHead: WebRTC's Opus needs none
            feed.deliver(payload, header.pts_us)
    except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
        # Video may go on (the server's own failure shows elsewhere).
        link.audio_status = AudioStatus(None, f"sound ended: {exc!r}")
        log.warning("%s: sound ended: %r", link.device_name, exc)
        if current():
            feed.end()
