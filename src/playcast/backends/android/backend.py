"""``AndroidBackend``: a phone or emulator as a game backend, over adb and scrcpy.

It owns one running scrcpy server at a time (``ScrcpyLink``) and ties the
parts together: the set-up through adb (``device.py``), the server's sockets
(``sockets.py``), the media pumps and feeds (``media.py``) and the touches
and keys (``input.py``). A failure of the running link ends ``packets()``
with BackendError and is pushed to the worker; ``reset()`` rebuilds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final, Literal

from playcast.backends.adb import Adb, AdbError
from playcast.backends.android import device
from playcast.backends.android.input import Fingers, key_message
from playcast.backends.android.media import (
    AudioFeed,
    VideoFeed,
    read_audio,
    read_video,
    watch_video,
)
from playcast.backends.android.settings import AndroidSettings, ladder, server_options
from playcast.backends.android.sockets import (
    AudioConfigError,
    ScrcpyLink,
    drain_control,
    open_link,
    watch_server,
)
from playcast.backends.audio import AudioPacket, AudioStatus, GameAudio
from playcast.backends.base import H264, BackendError, GameBackend, Health, VideoPacket
from playcast.backends.ladder import Ladder, LadderTiming
from playcast.backends.scrcpy import MediaPacket, ServerOptions, encode_reset_video

log = logging.getLogger("playcast.android")

# RESET_VIDEO restarts the device's encoder; repeat it only if no keyframe came.
KEYFRAME_RETRY: Final = 1.0
# The phone's own bit rate, measured over this long (the ladder compares it to the target).
RATE_WINDOW: Final = 2.0
# A rung whose stream uses less than this share of its bit rate (a still
# screen) says nothing about the link: the ladder holds.
IN_USE: Final = 0.7


class AndroidBackend(GameBackend, GameAudio):
    # What the scrcpy server is started with (video_codec=h264): the one codec
    # every phone's hardware encoder offers. Another (scrcpy also speaks h265
    # and av1) would be named here, preferred first, and passed to the server.
    codecs = (H264,)

    def __init__(self, settings: AndroidSettings) -> None:
        self.settings = settings
        self.game = settings.game
        self.device_name = ""
        self._adb = Adb(settings.adb, settings.serial, settings.adb_timeout)
        self._link: ScrcpyLink | None = None
        self._size = (0, 0)
        self._failure: str | None = None
        self._video = VideoFeed()
        self._audio = AudioFeed()
        # Why sound stays off for this device from now on (a configuration error).
        self._audio_refused: str | None = None
        self._fingers = Fingers()
        self._lock = asyncio.Lock()
        self._stopped = False
        self.rungs = ladder(settings)
        self._ladder = Ladder(
            [r.bit_rate for r in self.rungs],
            LadderTiming(settings.ladder_down, settings.ladder_up, probe=True),
        )
        self._pending: ScrcpyLink | None = None  # a rung's server, until its first keyframe
        self._switching: asyncio.Task[None] | None = None
        self._sent: deque[tuple[float, int]] = deque()  # (time, bytes) of the current link
        self.switches: list[float] = []  # each rung change's gap without a picture, s

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bring the game up; a device that is not usable yet is not fatal.

        Only a setting no retry can fix raises. A phone that is offline, still
        booting or without the game shows in ``health()``, and the worker's
        ``reset()`` retries (with backoff) bring it in once it works.
        """
        self._stopped = False
        await device.check_server_file(self.settings)
        device.check_options(self._server_options())
        try:
            async with self._lock, device.adb_errors():
                await self._bring_up()
        except BackendError as exc:
            self._failure = str(exc)
            log.error("device not usable yet (will retry on reset): %s", exc)

    async def reset(self) -> None:
        await self._cancel_switch()
        self._ladder.update(time.monotonic(), None)  # the next player starts at the top
        async with self._lock, device.adb_errors():
            self._release_pointers()
            link = self._link
            if link is not None and link.rung != 0:
                link.failed = True  # rebuilt at the top rung below
            await self._bring_up()
            if self._failure is not None:
                raise BackendError(self._failure)

    async def stop(self) -> None:
        self._stopped = True
        await self._cancel_switch()
        self._release_pointers()
        self._video.end()
        self._audio.end()
        link, self._link = self._link, None
        if link is not None:
            await self._close_link(link)

    async def health(self) -> Health:
        link = self._link
        if self._failure is not None:
            return Health(False, self._failure)
        if link is None:
            return Health(False, "not connected")
        try:
            state = await self._adb.get_state(timeout=min(5.0, self.settings.adb_timeout))
        except AdbError as exc:
            return Health(False, str(exc))
        if state != "device":
            return Health(False, f"device is {state}")
        # No video for a while is a still screen; the probe judges the link.
        width, height = self._size
        return Health(True, f"{self.device_name} {width}x{height}")

    # --- video -------------------------------------------------------------------

    async def packets(self, codec: str = H264) -> AsyncIterator[VideoPacket]:
        if codec not in self.codecs:
            raise BackendError(f"the Android backend does not send {codec} (only {self.codecs})")
        if self._video.consumed:
            raise BackendError("packets() already has a consumer")
        if self._failure is not None:
            raise BackendError(self._failure)
        if self._link is None:
            raise BackendError("the Android backend is not started")
        with self._video.consumer() as queue:
            self._video.awaiting_keyframe = True
            self.request_keyframe()
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item

    def request_keyframe(self) -> None:
        link = self._usable_link()
        if link is None:
            return
        now = time.monotonic()
        if link.keyframe_asked_at is not None and now - link.keyframe_asked_at < KEYFRAME_RETRY:
            return
        link.keyframe_asked_at = now
        self._write(link, encode_reset_video())

    def _deliver(self, link: ScrcpyLink, packet: MediaPacket, now: float) -> None:
        if link is self._pending and packet.keyframe:
            self._swap(link)
        if link is self._link:
            self._sent.append((now, len(packet.data)))
            self._video.deliver(packet, now, self.request_keyframe, link)

    def _resized(self, link: ScrcpyLink, size: tuple[int, int]) -> None:
        if size != link.size:
            link.size = size
        if size != self._size and link is self._link:
            # Rotation or resize: touches must carry the new size.
            log.info("video size %dx%d -> %dx%d", *self._size, *size)
            self._size = size

    # --- the ladder ----------------------------------------------------------------

    def set_target_bitrate(self, bps: int | None) -> None:
        now = time.monotonic()
        link = self._usable_link()
        if link is None:
            return
        need = self.rungs[link.rung].bit_rate
        used = self._rate(now)
        target: float | None = bps
        if bps is not None:
            # Compared with what the phone really sends: a still screen is no evidence.
            target = need if used < IN_USE * need else bps * need / used
        rung = self._ladder.update(now, target)
        if rung is not None and self._switching is None:
            self._switching = asyncio.create_task(self._switch(), name="android-rung")

    @property
    def encoding_bitrate(self) -> int | None:
        link = self._link
        return None if link is None else self.rungs[link.rung].bit_rate

    @property
    def encoding(self) -> str:
        link = self._link
        if link is None:
            return ""
        rung = self.rungs[link.rung]
        return (
            f"H264 {rung.bit_rate / 1e6:.2f} Mbit/s, max {rung.max_size}"
            f" (rung {link.rung + 1}/{len(self.rungs)})"
        )

    def _rate(self, now: float) -> float:
        while self._sent and self._sent[0][0] < now - RATE_WINDOW:
            self._sent.popleft()
        return 8 * sum(size for _, size in self._sent) / RATE_WINDOW

    async def _switch(self) -> None:
        """Restart the phone's video on the ladder's rung, until it is the one running."""
        try:
            while True:
                old = self._usable_link()
                rung = self._ladder.rung
                if old is None or self._stopped or old.rung == rung:
                    return
                if not await self._switch_to(old, rung):
                    self._ladder.rung = old.rung
                    return
        finally:
            self._switching = None

    async def _switch_to(self, old: ScrcpyLink, rung: int) -> bool:
        began = time.monotonic()
        async with self._lock:
            try:
                new = await self._connect(rung)
            except (BackendError, AdbError) as exc:
                log.warning(
                    "video rung %d not started (%s); staying on rung %d",
                    rung + 1,
                    exc,
                    old.rung + 1,
                )
                return False
            self._pending = new
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    await new.fresh_session.wait()  # its first keyframe: _deliver swapped them
            except TimeoutError:
                pass
            self._pending = None
            if self._link is not new:
                log.warning(
                    "video rung %d sent no picture; staying on rung %d", rung + 1, old.rung + 1
                )
                await self._close_link(new)
                return False
            await self._close_link(old)
        r = self.rungs[rung]
        log.info(
            "video rung %d -> %d: %.2f Mbit/s, max size %d (%.0f ms to start it)",
            old.rung + 1,
            rung + 1,
            r.bit_rate / 1e6,
            r.max_size,
            1000 * (time.monotonic() - began),
        )
        return True

    def _swap(self, new: ScrcpyLink) -> None:
        """The new rung's first picture: it takes over from the old server now."""
        old, self._link = self._link, new
        self._pending = None
        now = time.monotonic()
        gap = now - max((t for t, _ in self._sent), default=now)
        self.switches.append(gap)
        self._sent.clear()
        self._size = new.size
        if old is not None:
            old.failed = True  # its last packets and its end are not the game's

    async def _cancel_switch(self) -> None:
        task = self._switching
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- sound -------------------------------------------------------------------

    @property
    def audio_status(self) -> AudioStatus:
        if not self.settings.audio:
            return AudioStatus(None, "turned off")
        if self._audio_refused is not None:
            return AudioStatus(None, self._audio_refused)
        link = self._usable_link()
        if link is None:
            return AudioStatus(None, "not connected")
        return link.audio_status

    async def audio_packets(self) -> AsyncIterator[AudioPacket]:
        if self._audio.consumed:
            raise RuntimeError("audio_packets() already has a consumer")
        link = self._usable_link()
        if link is None or link.audio_status.codec is None:
            return
        with self._audio.consumer() as queue:
            while (item := await queue.get()) is not None:
                yield item

    # --- input -------------------------------------------------------------------

    async def inject_touch(
        self, action: Literal["down", "move", "up", "cancel"], pointer_id: int, x: float, y: float
    ) -> None:
        link = self._usable_link()
        if link is None:
            return
        message = self._fingers.touch(action, pointer_id, x, y, self._size)
        if message is not None:
            self._write(link, message)
            await self._drain(link)

    async def inject_key(self, action: Literal["down", "up"], key: str) -> None:
        link = self._usable_link()
        message = key_message(action, key)
        if link is None or message is None:
            return
        self._write(link, message)
        await self._drain(link)

    def _release_pointers(self) -> None:
        """Lift every finger still down, so the next player starts clean."""
        lifts = self._fingers.lift_all(self._size)
        link = self._usable_link()
        if link is not None:
            for message in lifts:
                self._write(link, message)

    def _write(self, link: ScrcpyLink, data: bytes) -> None:
        try:
            link.control.write(data)
        except (OSError, RuntimeError) as exc:
            self._fail(link, f"control socket: {exc}")

    async def _drain(self, link: ScrcpyLink) -> None:
        try:
            await link.control.drain()
        except (OSError, RuntimeError) as exc:
            self._fail(link, f"control socket: {exc}")

    def _usable_link(self) -> ScrcpyLink | None:
        link = self._link
        return None if link is None or link.failed else link

    # --- the running server ------------------------------------------------------

    async def _bring_up(self) -> None:
        """The scrcpy link (unless it is up) and the game relaunched, at once
        once the device and the game are known to be there: on a phone the
        server's start and the game's launch each take seconds of its own."""
        relaunch = functools.partial(device.relaunch, self._adb, self.settings)
        link = self._link
        if link is not None and not link.failed and link.proc.returncode is None:
            await relaunch()
            return
        self._link = None
        if link is not None:
            await self._close_link(link)
        await device.prepare(self._adb, self.settings)
        await concurrently(self._open_link(), relaunch())

    async def _open_link(self) -> None:
        try:
            self._link = await self._connect()
        except AudioConfigError as exc:
            # The server exits on it; video alone still works, so go on without sound.
            self._audio_refused = f"sound off: {exc}"
            log.warning("%s; reconnecting with video only", exc)
            self._link = await self._connect()
        self._size = self._link.size
        self._sent.clear()
        self._failure = None

    def _server_options(self, rung: int = 0) -> ServerOptions:
        return server_options(self.settings, self._server_audio(), self.rungs[rung])

    def _server_audio(self) -> bool:
        return self.settings.audio and self._audio_refused is None

    async def _connect(self, rung: int = 0) -> ScrcpyLink:
        """A scrcpy server at ``rung`` (the device prepared already)."""
        opts = self._server_options(rung)
        command = device.check_options(opts)
        async with device.tunnel(self._adb, opts) as port:
            proc, output, pump = await device.spawn_server(self._adb, command)
            try:
                link = await open_link(port, proc, output, self.settings, opts.audio)
            except BaseException:
                await device.terminate(proc)
                pump.cancel()
                raise
        link.rung = rung
        self.device_name = link.device_name
        self._start_pumps(link, pump)
        if self._stopped:
            await self._close_link(link)
            raise BackendError("stopped")
        log.info(
            "connected to %s, video %dx%d at %.2f Mbit/s, sound: %s",
            link.device_name,
            *link.size,
            opts.video_bit_rate / 1e6,
            link.audio_status.codec or link.audio_status.detail,
        )
        return link

    def _start_pumps(self, link: ScrcpyLink, pump: asyncio.Task[None]) -> None:
        def fail(reason: str) -> None:
            self._fail(link, reason)

        def deliver(packet: MediaPacket, now: float) -> None:
            self._deliver(link, packet, now)

        def resized(size: tuple[int, int]) -> None:
            self._resized(link, size)

        def probe() -> None:
            self._write(link, encode_reset_video())

        def current() -> bool:
            return link is self._link

        link.tasks += [
            pump,
            asyncio.create_task(read_video(link, deliver, resized, fail)),
            asyncio.create_task(watch_video(link, self.settings, probe, fail)),
            asyncio.create_task(drain_control(link, fail)),
            asyncio.create_task(watch_server(link, fail)),
        ]
        if link.audio is not None and link.audio_status.codec is not None:
            sound = read_audio(link, link.audio, current, self._audio)
            link.tasks.append(asyncio.create_task(sound))

    async def _close_link(self, link: ScrcpyLink) -> None:
        link.failed = True
        link.close_sockets()
        for task in link.tasks:
            task.cancel()
        await device.terminate(link.proc)
        await asyncio.gather(*link.tasks, return_exceptions=True)

    def _fail(self, link: ScrcpyLink, reason: str) -> None:
        if link.failed:
            return
        link.failed = True
        link.close_sockets()
        if link is self._link:
            self._failure = reason
            log.warning("android backend failed: %s", reason)
            self._video.fail(BackendError(reason))
            self._audio.end()
            self.report_failure(reason)  # pushed: an idle worker leaves the pool now


async def concurrently(*steps: Coroutine[Any, Any, None]) -> None:
    """Every step at once; the first to fail cancels the others, and its
    exception is raised as is (not in a group: callers catch BackendError)."""
    tasks = [asyncio.create_task(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
