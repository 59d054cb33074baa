"""The Android backend: a phone or emulator, driven with adb and scrcpy 3.3.x.

adb pushes the scrcpy server, opens a forward tunnel and starts the server;
the server's H.264 and Opus go to the worker as they come (no decoding, no
re-encoding), and touches and keys go back as scrcpy control messages.

Sound needs Android 11 or later: an older phone (or one that refuses the
capture) answers on the audio socket with the disabled-stream code, and the
session is video only, as the log and ``audio_status`` say.

A still screen is not a dead phone: about a second after the picture stops
changing, a phone sends no video at all. So silence alone never fails the
link; after ``quiet_probe`` seconds of it the backend sends RESET_VIDEO, which
a live server answers with a new encoder session (config packet, keyframe),
and only a probe unanswered for ``probe_timeout`` is a dead device. The other
failures (adb transport or device gone, server exited, a socket closed) end
``packets()`` with BackendError; ``reset()`` then rebuilds the connection from
scratch, raising BackendError for as long as the device is unusable, so the
worker can retry it with backoff and register only once it works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from playcast.backends.adb import Adb, AdbError
from playcast.backends.audio import AudioPacket, AudioStatus, GameAudio
from playcast.backends.base import H264, BackendError, GameBackend, Health, VideoPacket
from playcast.backends.scrcpy import (
    DEVICE_NAME_FIELD_LENGTH,
    DEVICE_SERVER_PATH,
    MAX_POINTERS,
    PACKET_HEADER_SIZE,
    SCRCPY_VERSION,
    AudioStream,
    KeyAction,
    MediaPacket,
    MotionAction,
    PacketMerger,
    ProtocolError,
    ServerOptions,
    android_keycode,
    config_picture_size,
    encode_inject_keycode,
    encode_inject_touch,
    encode_reset_video,
    parse_audio_codec_id,
    parse_codec_id,
    parse_device_meta,
    parse_packet_header,
    parse_video_size,
    server_command,
    to_video_point,
)
from playcast.envflags import add_flag
from playcast.protocol import DEFAULT_GAME

log = logging.getLogger("playcast.android")

# Frames waiting for a slow consumer before we drop them and restart from a
# keyframe: queueing more only adds latency.
MAX_QUEUED: Final = 30
# Sound waiting for a slow consumer: older packets are dropped beyond this
# (200 ms), since late sound is worse than a gap.
MAX_AUDIO_QUEUED: Final = 10
# RESET_VIDEO restarts the device's encoder; repeat it only if no keyframe came.
KEYFRAME_RETRY: Final = 1.0


@dataclass(frozen=True, slots=True)
class AndroidSettings:
    scrcpy_server: str
    serial: str | None = None  # None: adb's default device ($ANDROID_SERIAL or the only one)
    adb: str = "adb"
    game: str = DEFAULT_GAME
    scrcpy_version: str = SCRCPY_VERSION
    max_size: int = 1280
    video_bit_rate: int = 4_000_000
    max_fps: int = 60
    keyframe_interval: int = 2
    codec_options: str = ""
    connect_timeout: float = 10.0  # server start to every socket connected
    # Video silence before a RESET_VIDEO probe (a still screen sends nothing
    # about a second after it stops changing), and how long its answer (a
    # config packet and a keyframe) may take before the device counts as dead.
    quiet_probe: float = 1.0
    probe_timeout: float = 5.0
    audio: bool = True  # ask for the game's sound (Android 11+)
    audio_bit_rate: int = 128_000
    launch_timeout: float = 60.0  # game launch to foreground
    poll_interval: float = 0.25  # foreground checks while launching
    adb_timeout: float = 20.0
    retry_delay: float = 0.1  # between tunnel connection attempts, as scrcpy does


class _AudioConfigError(BackendError):
    """The device answered the audio socket with the configuration-error code."""


@dataclass(eq=False)
class _Link:
    """One running scrcpy server and its sockets (video, audio when asked, control)."""

    proc: asyncio.subprocess.Process
    video: asyncio.StreamReader
    video_writer: asyncio.StreamWriter
    control_reader: asyncio.StreamReader
    control: asyncio.StreamWriter
    device_name: str
    output: deque[str]
    audio: asyncio.StreamReader | None = None
    audio_writer: asyncio.StreamWriter | None = None
    audio_status: AudioStatus = field(default_factory=lambda: AudioStatus(None, "not asked for"))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failed: bool = False
    last_packet: float = field(default_factory=time.monotonic)
    keyframe_asked_at: float | None = None
    # Set by every video packet, and by a keyframe that follows a config
    # packet (a new encoder session: the answer to RESET_VIDEO).
    video_seen: asyncio.Event = field(default_factory=asyncio.Event)
    fresh_session: asyncio.Event = field(default_factory=asyncio.Event)
    probes: int = 0

    def close_sockets(self) -> None:
        for writer in (self.video_writer, self.audio_writer, self.control):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()


_MOTION: Final = {"down": MotionAction.DOWN, "move": MotionAction.MOVE, "up": MotionAction.UP}


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
        self._link: _Link | None = None
        self._size = (0, 0)
        self._failure: str | None = None
        self._queue: asyncio.Queue[VideoPacket | BaseException | None] | None = None
        self._audio_queue: asyncio.Queue[AudioPacket | None] | None = None
        # Why sound stays off for this device from now on (a configuration error).
        self._audio_refused: str | None = None
        self._awaiting_keyframe = False
        self._pointers: dict[int, tuple[float, float]] = {}
        self._lock = asyncio.Lock()
        self._stopped = False

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
        jar = Path(self.settings.scrcpy_server)
        if not await asyncio.to_thread(jar.is_file):
            raise BackendError(f"scrcpy server file {jar} not found")
        try:
            server_command(self._server_options())
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        try:
            async with self._lock, _adb_errors():
                await self._ensure_link()
                await self._relaunch()
        except BackendError as exc:
            self._failure = str(exc)
            log.error("device not usable yet (will retry on reset): %s", exc)

    async def reset(self) -> None:
        async with self._lock, _adb_errors():
            self._release_pointers()
            await self._ensure_link()
            await self._relaunch()
            if self._failure is not None:
                raise BackendError(self._failure)

    async def stop(self) -> None:
        self._stopped = True
        self._release_pointers()
        self._end_consumer(None)
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
        if self._queue is not None:
            raise BackendError("packets() already has a consumer")
        if self._failure is not None:
            raise BackendError(self._failure)
        if self._link is None:
            raise BackendError("the Android backend is not started")
        queue: asyncio.Queue[VideoPacket | BaseException | None] = asyncio.Queue()
        self._queue = queue
        self._awaiting_keyframe = True
        self.request_keyframe()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._queue is queue:
                self._queue = None

    def request_keyframe(self) -> None:
        link = self._usable_link()
        if link is None:
            return
        now = time.monotonic()
        if link.keyframe_asked_at is not None and now - link.keyframe_asked_at < KEYFRAME_RETRY:
            return
        link.keyframe_asked_at = now
        self._write(link, encode_reset_video())

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
        if self._audio_queue is not None:
            raise RuntimeError("audio_packets() already has a consumer")
        link = self._usable_link()
        if link is None or link.audio_status.codec is None:
            return
        queue: asyncio.Queue[AudioPacket | None] = asyncio.Queue()
        self._audio_queue = queue
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            if self._audio_queue is queue:
                self._audio_queue = None

    # --- input -------------------------------------------------------------------

    async def inject_touch(
        self, action: Literal["down", "move", "up", "cancel"], pointer_id: int, x: float, y: float
    ) -> None:
        link = self._usable_link()
        if link is None:
            return
        down = pointer_id in self._pointers
        if not down and len(self._pointers) >= MAX_POINTERS:
            # The server would ignore an 11th finger: do not send it at all.
            log.debug("touch for an 11th pointer (%d) dropped", pointer_id)
            return
        if action == "down":
            motion = MotionAction.MOVE if down else MotionAction.DOWN
            self._pointers[pointer_id] = (x, y)
        elif not down:
            # The server would create a pointer that never lifts: a ghost finger.
            return
        elif action == "move":
            motion = MotionAction.MOVE
            self._pointers[pointer_id] = (x, y)
        else:
            # scrcpy frees a pointer only on ACTION_UP; a CANCEL would leave it
            # pressed for good, so a cancelled touch lifts where it was.
            motion = MotionAction.UP
            del self._pointers[pointer_id]
        self._write(link, self._touch(motion, pointer_id, x, y))
        await self._drain(link)

    async def inject_key(self, action: Literal["down", "up"], key: str) -> None:
        link = self._usable_link()
        mapped = android_keycode(key)
        if link is None or mapped is None:
            return
        keycode, meta = mapped
        key_action = KeyAction.DOWN if action == "down" else KeyAction.UP
        self._write(link, encode_inject_keycode(key_action, keycode, 0, meta))
        await self._drain(link)

    def _touch(self, motion: MotionAction, pointer_id: int, x: float, y: float) -> bytes:
        width, height = self._size
        px, py = to_video_point(x, y, width, height)
        pressure = 0.0 if motion is MotionAction.UP else 1.0
        return encode_inject_touch(motion, pointer_id, px, py, width, height, pressure)

    def _release_pointers(self) -> None:
        """Lift every finger still down, so the next player starts clean."""
        pointers, self._pointers = self._pointers, {}
        link = self._usable_link()
        if link is not None:
            for pointer_id, (x, y) in pointers.items():
                self._write(link, self._touch(MotionAction.UP, pointer_id, x, y))

    def _write(self, link: _Link, data: bytes) -> None:
        try:
            link.control.write(data)
        except (OSError, RuntimeError) as exc:
            self._fail(link, f"control socket: {exc}")

    async def _drain(self, link: _Link) -> None:
        try:
            await link.control.drain()
        except (OSError, RuntimeError) as exc:
            self._fail(link, f"control socket: {exc}")

    def _usable_link(self) -> _Link | None:
        link = self._link
        return None if link is None or link.failed else link

    # --- connection --------------------------------------------------------------

    async def _ensure_link(self) -> None:
        link = self._link
        if link is not None and not link.failed and link.proc.returncode is None:
            return
        self._link = None
        if link is not None:
            await self._close_link(link)
        try:
            self._link = await self._connect()
        except _AudioConfigError as exc:
            # The server exits on it; video alone still works, so go on without sound.
            self._audio_refused = f"sound off: {exc}"
            log.warning("%s; reconnecting with video only", exc)
            self._link = await self._connect()
        self._failure = None

    async def _connect(self) -> _Link:
        s = self.settings
        state = await self._adb.get_state()
        if state != "device":
            raise BackendError(f"device {s.serial or '(default)'} is {state}")
        jar = Path(s.scrcpy_server)
        if not await asyncio.to_thread(jar.is_file):
            raise BackendError(f"scrcpy server file {jar} not found")
        await self._adb.push(jar, DEVICE_SERVER_PATH)
        if not await self._adb.is_installed(s.game):
            raise BackendError(f"{s.game} is not installed on the device")
        opts = self._server_options()
        try:
            command = server_command(opts)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        port = await self._adb.forward("tcp:0", f"localabstract:{opts.socket_name}")
        try:
            proc = await self._adb.spawn_shell(command)
            output: deque[str] = deque(maxlen=40)
            pump = asyncio.create_task(_pump_output(proc, output))
            try:
                link = await self._open_sockets(port, proc, output)
            except BaseException:
                await _terminate(proc)
                pump.cancel()
                raise
        finally:
            # As scrcpy does: the tunnel is only needed to connect.
            await self._adb.forward_remove(f"tcp:{port}")
        link.tasks += [
            pump,
            asyncio.create_task(self._read_video(link)),
            asyncio.create_task(self._watch_video(link)),
            asyncio.create_task(self._drain_control(link)),
            asyncio.create_task(self._watch_server(link)),
        ]
        if link.audio is not None and link.audio_status.codec is not None:
            link.tasks.append(asyncio.create_task(self._read_audio(link, link.audio)))
        if self._stopped:
            await self._close_link(link)
            raise BackendError("stopped")
        log.info(
            "connected to %s, video %dx%d, sound: %s",
            link.device_name,
            *self._size,
            link.audio_status.codec or link.audio_status.detail,
        )
        return link

    def _server_options(self) -> ServerOptions:
        s = self.settings
        return ServerOptions(
            scid=secrets.randbits(31),
            version=s.scrcpy_version,
            max_size=s.max_size,
            video_bit_rate=s.video_bit_rate,
            max_fps=s.max_fps,
            keyframe_interval=s.keyframe_interval,
            extra_codec_options=s.codec_options,
            audio=s.audio and self._audio_refused is None,
            audio_bit_rate=s.audio_bit_rate,
        )

    async def _open_sockets(
        self, port: int, proc: asyncio.subprocess.Process, output: deque[str]
    ) -> _Link:
        s = self.settings

        async def first_socket() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            # adb accepts the connection even before the server listens, then
            # closes it; the server's dummy byte tells that it really is there.
            while True:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    try:
                        await reader.readexactly(1)
                        return reader, writer
                    except BaseException:
                        writer.close()
                        raise
                await asyncio.sleep(s.retry_delay)

        connecting = asyncio.create_task(first_socket())
        exited = asyncio.create_task(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {connecting, exited},
                timeout=s.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            exited.cancel()
            connecting.cancel()
        if connecting not in done or connecting.cancelled():
            tail = " | ".join(list(output)[-5:])
            if exited in done:
                raise BackendError(f"scrcpy server exited ({proc.returncode}): {tail}")
            raise BackendError(f"scrcpy server did not accept within {s.connect_timeout:g}s")
        video, video_writer = connecting.result()
        audio: asyncio.StreamReader | None = None
        audio_writer: asyncio.StreamWriter | None = None
        audio_status = AudioStatus(None, "turned off")
        try:
            async with asyncio.timeout(s.connect_timeout):
                # DesktopConnection accepts video, then audio, then control.
                if self._server_audio():
                    audio, audio_writer = await asyncio.open_connection("127.0.0.1", port)
                control_reader, control = await asyncio.open_connection("127.0.0.1", port)
                sock = control.get_extra_info("socket")
                if sock is not None:
                    # Touches are tiny writes; Nagle would hold them back.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                name = parse_device_meta(await video.readexactly(DEVICE_NAME_FIELD_LENGTH))
                parse_codec_id(await video.readexactly(4))
                self._size = parse_video_size(await video.readexactly(8))
                if audio is not None:
                    audio_status = _audio_status(parse_audio_codec_id(await audio.readexactly(4)))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            for writer in (video_writer, audio_writer):
                if writer is not None:
                    writer.close()
            tail = " | ".join(list(output)[-5:])
            raise BackendError(f"scrcpy handshake failed: {exc!r} {tail}") from None
        if audio_status.detail == _AUDIO_ERROR:
            video_writer.close()
            if audio_writer is not None:
                audio_writer.close()
            raise _AudioConfigError("the device reported an audio configuration error")
        if audio is not None and audio_status.codec is None:
            log.warning("%s: %s; video only", name, audio_status.detail)
        self.device_name = name
        return _Link(
            proc,
            video,
            video_writer,
            control_reader,
            control,
            name,
            output,
            audio=audio,
            audio_writer=audio_writer,
            audio_status=audio_status,
        )

    def _server_audio(self) -> bool:
        return self.settings.audio and self._audio_refused is None

    async def _close_link(self, link: _Link) -> None:
        link.failed = True
        link.close_sockets()
        for task in link.tasks:
            task.cancel()
        await _terminate(link.proc)
        await asyncio.gather(*link.tasks, return_exceptions=True)

    def _fail(self, link: _Link, reason: str) -> None:
        if link.failed:
            return
        link.failed = True
        link.close_sockets()
        if link is self._link:
            self._failure = reason
            log.warning("android backend failed: %s", reason)
            self._end_consumer(BackendError(reason))
            self.report_failure(reason)  # pushed: an idle worker leaves the pool now

    def _end_consumer(self, item: BaseException | None) -> None:
        queue = self._queue
        if queue is not None:
            queue.put_nowait(item)
        audio = self._audio_queue
        if audio is not None:
            audio.put_nowait(None)

    async def _watch_video(self, link: _Link) -> None:
        """Silence is a still screen until a RESET_VIDEO probe goes unanswered."""
        s = self.settings
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
            self._write(link, encode_reset_video())
            try:
                async with asyncio.timeout(s.probe_timeout):
                    await link.fresh_session.wait()
            except TimeoutError:
                self._fail(
                    link,
                    f"video silent and RESET_VIDEO unanswered for {s.probe_timeout:g}s:"
                    " the device's encoder is gone",
                )
                return

    async def _read_audio(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Opus packets (after the OpusHead config packet) to the sound consumer."""
        try:
            while True:
                header = parse_packet_header(await reader.readexactly(PACKET_HEADER_SIZE))
                payload = await reader.readexactly(header.size)
                if header.config or link is not self._link:
                    continue  # the OpusHead: WebRTC's Opus needs none
                queue = self._audio_queue
                if queue is None:
                    continue
                while queue.qsize() >= MAX_AUDIO_QUEUED:
                    queue.get_nowait()
                # Device PTS is in microseconds; the audio clock is 48 kHz.
                pts = header.pts_us * 6 // 125
                queue.put_nowait(AudioPacket(payload, pts, time.monotonic()))
        except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            # Video may go on (the server's own failure shows elsewhere).
            link.audio_status = AudioStatus(None, f"sound ended: {exc!r}")
            log.warning("%s: sound ended: %r", link.device_name, exc)
            if self._audio_queue is not None and link is self._link:
                self._audio_queue.put_nowait(None)

    async def _read_video(self, link: _Link) -> None:
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
                    if size is not None and size != self._size and link is self._link:
                        # Rotation or resize: touches must carry the new size.
                        log.info("video size %dx%d -> %dx%d", *self._size, *size)
                        self._size = size
                packet = merger.feed(header, payload)
                if packet is not None:
                    self._deliver(link, packet, now)
        except asyncio.IncompleteReadError:
            self._fail(link, "the device closed the video socket")
        except (OSError, ProtocolError) as exc:
            self._fail(link, f"video socket: {exc}")

    def _deliver(self, link: _Link, packet: MediaPacket, now: float) -> None:
        if packet.keyframe:
            link.keyframe_asked_at = None
        queue = self._queue
        if queue is None or link is not self._link:
            return
        if not self._awaiting_keyframe and queue.qsize() >= MAX_QUEUED:
            log.warning("video consumer is %d frames behind; restarting at a keyframe", MAX_QUEUED)
            for _ in _drain_queue(queue):
                pass
            self._awaiting_keyframe = True
            self.request_keyframe()
        if self._awaiting_keyframe:
            if not packet.keyframe:
                return
            self._awaiting_keyframe = False
        # Device PTS is in microseconds; the video clock is 90 kHz.
        queue.put_nowait(VideoPacket(packet.data, packet.pts_us * 9 // 100, packet.keyframe, now))

    async def _drain_control(self, link: _Link) -> None:
        # Device messages (clipboard, UHID output) are not used, but must be read.
        try:
            while await link.control_reader.read(4096):
                pass
            self._fail(link, "the device closed the control socket")
        except OSError as exc:
            self._fail(link, f"control socket: {exc}")

    async def _watch_server(self, link: _Link) -> None:
        code = await link.proc.wait()
        tail = " | ".join(list(link.output)[-3:])
        self._fail(link, f"scrcpy server exited ({code}) {tail}".rstrip())

    # --- the game ----------------------------------------------------------------

    async def _relaunch(self) -> None:
        """Force-stop the game, start it again, and wait until it is in front."""
        game = self.settings.game
        await self._adb.force_stop(game)
        await self._adb.launch(game)
        deadline = time.monotonic() + self.settings.launch_timeout
        # No event tells us the activity resumed: poll, at a short interval.
        while game not in await self._adb.resumed_packages():
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{game} not in the foreground after {self.settings.launch_timeout:g}s"
                )
            await asyncio.sleep(self.settings.poll_interval)
        log.info("%s is in the foreground", game)


_AUDIO_ERROR: Final = "audio configuration error"


def _audio_status(stream: AudioStream) -> AudioStatus:
    if stream is AudioStream.OPUS:
        return AudioStatus("opus", "from the phone")
    if stream is AudioStream.DISABLED:
        return AudioStatus(
            None, "the phone sends no sound (Android 10 or older, or audio capture refused)"
        )
    return AudioStatus(None, _AUDIO_ERROR)


def _drain_queue(
    queue: asyncio.Queue[VideoPacket | BaseException | None],
) -> Iterator[VideoPacket | BaseException | None]:
    while not queue.empty():
        yield queue.get_nowait()


async def _pump_output(proc: asyncio.subprocess.Process, output: deque[str]) -> None:
    """The server's log lines, to our log and to a tail kept for error messages."""
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            output.append(line)
            log.info("device: %s", line)


async def _terminate(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def _adb_errors() -> AsyncIterator[None]:
    try:
        yield
    except AdbError as exc:
        raise BackendError(str(exc)) from None


# --- wiring into ``playcast worker`` ------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``playcast worker --backend android`` (each also a PLAYCAST_… variable)."""
    add_flag(parser, "--serial", help="adb serial of the phone or emulator (see adb devices)")
    add_flag(parser, "--scrcpy-server", help=f"the scrcpy-server-v{SCRCPY_VERSION} file to push")
    add_flag(parser, "--adb", default="adb", help="adb executable")
    add_flag(
        parser,
        "--scrcpy-version",
        default=SCRCPY_VERSION,
        help="version the server file reports (must match it exactly)",
    )
    add_flag(parser, "--android-max-size", type=int, default=1280, help="longest video side")
    add_flag(parser, "--android-bit-rate", type=int, default=4_000_000, help="video bit rate")
    add_flag(parser, "--android-max-fps", type=int, default=60, help="video frame rate cap")
    add_flag(
        parser, "--android-keyframe-interval", type=int, default=2, help="seconds between IDRs"
    )
    add_flag(
        parser, "--android-codec-options", default="", help="extra MediaCodec options (k=v,...)"
    )
    add_flag(
        parser,
        "--android-probe-timeout",
        type=float,
        default=5.0,
        help="seconds a RESET_VIDEO probe (sent after 1 s of video silence) may go unanswered",
    )
    add_flag(
        parser,
        "--android-audio-bit-rate",
        type=int,
        default=128_000,
        help="Opus bit rate of the game's sound",
    )
    add_flag(
        parser,
        "--android-launch-timeout",
        type=float,
        default=60.0,
        help="seconds for the game to reach the foreground",
    )


def create_backend(args: argparse.Namespace) -> AndroidBackend:
    if not args.scrcpy_server:
        raise SystemExit("--backend android needs --scrcpy-server PATH (or PLAYCAST_SCRCPY_SERVER)")
    return AndroidBackend(
        AndroidSettings(
            scrcpy_server=args.scrcpy_server,
            serial=args.serial or None,
            adb=args.adb,
            game=getattr(args, "game", None) or DEFAULT_GAME,
            scrcpy_version=args.scrcpy_version,
            max_size=args.android_max_size,
            video_bit_rate=args.android_bit_rate,
            max_fps=args.android_max_fps,
            keyframe_interval=args.android_keyframe_interval,
            codec_options=args.android_codec_options,
            probe_timeout=args.android_probe_timeout,
            audio=not getattr(args, "no_audio", False),
            audio_bit_rate=args.android_audio_bit_rate,
            launch_timeout=args.android_launch_timeout,
        )
    )


from_args = create_backend
