"""A phone for tests: what adb and a scrcpy 3.3.4 server look like from the host.

Two halves, both on localhost, both in the test's event loop:

- the *adb side*: ``tests/fake_adb/adb`` relays each command line here
  (``PLAYCAST_FAKE_ADB_DEVICE=host:port``); this answers like a device would:
  ``get-state``, ``push``, ``forward tcp:0 localabstract:…`` (a real listening
  port per forward, closing connections nobody serves on the device, as adb
  does), ``shell am force-stop``, ``monkey``, ``dumpsys activity activities``,
  ``pm path``, ``input keyevent``, ``wm dismiss-keyguard`` (and ``;``-separated
  scripts of them) and ``app_process … com.genymobile.scrcpy.Server``;
- the *scrcpy server* that ``app_process`` starts: it checks its arguments,
  serves the video, the audio (when ``audio`` is not false) and the control
  socket, in that order (dummy byte, 64-byte name, codec header, 12-byte
  packet headers, a config packet per encoder session), streams real H.264
  made by libx264 through PyAV the way MediaCodec delivers it (SPS and PPS
  only in the config packet) and real Opus (the OpusHead as config packet,
  then 20 ms packets: a hum, and a click after each touch-down), and parses
  every control message as ``ControlMessageReader.java`` does (pointer ids
  signed), mapping touches to screen coordinates as the server's
  PositionMapper does (dropping those made for another size, truncating, not
  rounding) and keeping at most ten pointers down as PointersState does.

A still screen behaves as on a phone: MediaCodec repeats the last frame after
100 ms without change (``KEY_REPEAT_PREVIOUS_FRAME_AFTER``), about ten times,
then sends nothing until the screen changes or RESET_VIDEO starts a new
encoder session (config packet and keyframe first).

The screen and its lock: ``screen_on``, ``keyguard_showing`` and
``keyguard_secure`` (a PIN, which ``wm dismiss-keyguard`` cannot dismiss). A
game launched behind the keyguard does not reach the foreground (its
activity is not resumed) until the keyguard goes.

Switches: ``hold_still()``/``animate()``, ``go_offline()``, ``kill_server()``,
``stall_video()`` (a hung encoder: not even RESET_VIDEO gets an answer),
``rotate()``, ``lock()``; ``audio_capture`` picks what the audio socket says:
Opus, the disabled code (Android 10 and older, or capture refused) or the
error code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import shlex
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import av
import numpy as np
import numpy.typing as npt

from playcast.backends.audio import FRAME_SECONDS, SoundMaker
from playcast.backends.nal import (
    NAL_PPS,
    NAL_SLICE_IDR,
    NAL_SPS,
    iter_nals,
)
from playcast.backends.scrcpy import (
    CODEC_ID_DISABLED,
    CODEC_ID_ERROR,
    CODEC_ID_H264,
    CODEC_ID_OPUS,
    DEVICE_NAME_FIELD_LENGTH,
    DEVICE_SERVER_PATH,
    MAX_POINTERS,
    SCRCPY_VERSION,
    SERVER_CLASS,
    SOCKET_NAME_PREFIX,
    encode_packet_header,
)
from playcast.protocol import DEFAULT_GAME

# testkit/playcast_testing/fake_device.py -> the repository root (an editable install).
FAKE_ADB: Final = Path(__file__).resolve().parents[2] / "tests" / "fake_adb" / "adb"
LAUNCHER: Final = "com.android.launcher3/.uioverrides.QuickstepLauncher"
WAKE_KEYS: Final = ("KEYCODE_WAKEUP", "WAKEUP", "224")  # what input keyevent takes
START_CODE: Final = b"\x00\x00\x00\x01"

# Options.java (3.3.x) accepts these keys; anything else is a client bug here.
KNOWN_OPTIONS: Final = frozenset(
    """scid log_level video audio video_codec audio_codec video_source audio_source audio_dup
    max_size video_bit_rate audio_bit_rate max_fps angle tunnel_forward crop control
    display_id show_touches stay_awake screen_off_timeout video_codec_options
    audio_codec_options video_encoder audio_encoder power_off_on_close clipboard_autosync
    downsize_on_error cleanup power_on list_encoders list_displays list_cameras
    list_camera_sizes list_apps camera_id camera_size camera_facing camera_ar camera_fps
    camera_high_speed new_display vd_destroy_content vd_system_decorations
    capture_orientation display_ime_policy send_device_meta send_frame_meta send_dummy_byte
    send_codec_meta raw_stream""".split()  # noqa: SIM905
)


# SurfaceEncoder.REPEAT_FRAME_DELAY_US, and how many repeats Android's encoder
# makes of an unchanged picture before it goes quiet.
REPEAT_FRAME_DELAY: Final = 0.1
STILL_REPEATS: Final = 10

AudioCapture = Literal["opus", "disabled", "error"]


def compute_video_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """ScreenCapture's ``getOutputSize().limit(maxSize).round8()`` (device/Size.java)."""
    portrait = height > width
    major, minor = (height, width) if portrait else (width, height)
    if max_size and major > max_size:  # limit(): longest side capped, ratio floored
        major, minor = max_size, max_size * minor // major
    major &= ~7  # round8(): down, so as not to exceed the size
    minor = min((minor + 4) & ~7, major)  # to the nearest, for the aspect ratio
    return (minor, major) if portrait else (major, minor)


@dataclass(frozen=True, slots=True)
class SentPacket:
    header: bytes
    payload: bytes
    sent_at: float  # time.monotonic() as it is handed to the socket

    @property
    def config(self) -> bool:
        return bool(self.header[0] & 0x80)

    @property
    def keyframe(self) -> bool:
        return bool(self.header[0] & 0x40)


@dataclass(frozen=True, slots=True)
class Touch:
    action: int
    pointer_id: int
    x: int
    y: int
    width: int
    height: int
    pressure: int  # u16 fixed point, as on the wire
    action_button: int
    buttons: int
    screen_x: int | None  # None when the server ignored it (wrong size, 11th pointer)
    screen_y: int | None


@dataclass(frozen=True, slots=True)
class Control:
    """One control message as the device parsed it."""

    type: int
    raw: bytes
    received_at: float
    touch: Touch | None = None
    key: tuple[int, int, int, int] | None = None  # action, keycode, repeat, metastate


class _Encoder:
    """libx264 split the way MediaCodec outputs: config (SPS+PPS), then frames;
    at ``bit_rate`` (MediaCodec's KEY_BIT_RATE: the server's video_bit_rate)."""

    def __init__(
        self, width: int, height: int, fps: int, keyint_s: float, bit_rate: int = 8_000_000
    ) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, 1_000_000)
        ctx.framerate = fractions.Fraction(fps, 1)
        ctx.profile = "Baseline"
        ctx.thread_count = 1
        keyint = max(1, round(keyint_s * fps))
        ctx.bit_rate = bit_rate
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "maxrate": str(bit_rate),
            "bufsize": str(bit_rate // 2),
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0",
        }
        ctx.open()
        self._ctx = ctx
        self.width = width
        self.height = height
        yy, xx = np.mgrid[0:height, 0:width]
        self._luma = ((xx * 255 // max(1, width - 1) + yy * 64 // max(1, height)) % 256).astype(
            np.uint8
        )

    def picture(self, index: int) -> npt.NDArray[np.uint8]:
        w, h = self.width, self.height
        frame = np.empty((h * 3 // 2, w), np.uint8)
        frame[:h] = self._luma
        frame[h:] = 128
        # A moving block, so consecutive frames differ like a game's would.
        side = max(16, w // 8)
        x = (index * 7) % max(1, w - side)
        y = (index * 13) % max(1, h - side)
        frame[y : y + side, x : x + side] = 235
        # A band of fresh noise, as dear as a real game's detail, so the encoder
        # spends the bit rate it is given (a flat picture would undershoot it).
        band = h // 4
        noise = np.random.default_rng(index).integers(16, 200, (band, w), dtype=np.uint8)
        frame[h - band : h] = noise
        return frame

    def encode(self, index: int, pts_us: int) -> tuple[bytes, bytes, bool]:
        frame = av.VideoFrame.from_ndarray(self.picture(index), format="yuv420p")
        frame.pts = pts_us
        frame.time_base = self._ctx.time_base
        data = b"".join(bytes(p) for p in self._ctx.encode(frame))
        config = b""
        media = b""
        key = False
        for nal in iter_nals(data):
            kind = nal[0] & 0x1F
            if kind in (NAL_SPS, NAL_PPS):
                config += START_CODE + nal
            elif 1 <= kind <= NAL_SLICE_IDR:
                media += START_CODE + nal
                key = key or kind == NAL_SLICE_IDR
        return config, media, key


class _Reply:
    """Output of one relayed adb command, as JSON lines to tests/fake_adb/adb."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def _send(self, **msg: Any) -> None:
        with contextlib.suppress(Exception):
            self._writer.write(json.dumps(msg).encode() + b"\n")

    def out(self, text: str) -> None:
        self._send(out=text)

    def err(self, text: str) -> None:
        self._send(err=text)

    def exit(self, code: int) -> None:
        self._send(exit=code)


class _Server:
    """One ``app_process … Server`` run: the scrcpy server on the device."""

    def __init__(self, device: FakeDevice, options: dict[str, str]) -> None:
        self.device = device
        self.options = options
        self.socket_name = f"{SOCKET_NAME_PREFIX}{int(options['scid'], 16):08x}"
        self.accepts: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.max_size = int(options.get("max_size", "0"))
        self.video_bit_rate = int(options.get("video_bit_rate", "8000000"))
        self.max_fps = int(float(options.get("max_fps", "0"))) or 60
        codec_options = dict(
            kv.split("=", 1) for kv in options.get("video_codec_options", "").split(",") if kv
        )
        self.codec_options = codec_options
        self.keyframe_interval = float(codec_options.get("i-frame-interval", "10"))
        self.video_size = (0, 0)
        self.audio = options.get("audio", "true") == "true"
        self.exit_code = 0
        self.done = asyncio.Event()
        self._restart = False
        self._writers: list[asyncio.StreamWriter] = []
        # PointersState: the ids of the fingers down, at most MAX_POINTERS.
        self.pointers: list[int] = []
        self.click_pending = False  # a touch went down: the next sound packet clicks

    def compute_size(self) -> tuple[int, int]:
        return compute_video_size(*self.device.screen, self.max_size)

    def restart_encoder(self) -> None:
        self._restart = True
        self.device.changed.set()

    def kill(self, code: int) -> None:
        if not self.done.is_set():
            self.exit_code = code
            for writer in self._writers:
                writer.close()
            self.done.set()

    async def run(self) -> None:
        dev = self.device
        try:
            video_r, video = await self.accepts.get()
            self._writers.append(video)
            video.write(b"\x00")  # the dummy byte: tunnel_forward=true
            audio: asyncio.StreamWriter | None = None
            if self.audio:
                _, audio = await self.accepts.get()
                self._writers.append(audio)
            control_r, control = await self.accepts.get()
            self._writers.append(control)
            dev.listening.pop(self.socket_name, None)  # LocalServerSocket closed
            name = dev.name.encode()[: DEVICE_NAME_FIELD_LENGTH - 1]
            video.write(name.ljust(DEVICE_NAME_FIELD_LENGTH, b"\0"))
            tasks = [
                asyncio.create_task(self._stream(video)),
                asyncio.create_task(self._control(control_r)),
                asyncio.create_task(self._watch_eof(video_r)),
            ]
            if audio is not None:
                tasks.append(asyncio.create_task(self._sound(audio)))
            try:
                done_wait = asyncio.create_task(self.done.wait())
                await asyncio.wait([*tasks, done_wait], return_when=asyncio.FIRST_COMPLETED)
                done_wait.cancel()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            dev.listening.pop(self.socket_name, None)
            for writer in self._writers:
                writer.close()
            self.done.set()
            dev.notify()

    async def _watch_eof(self, reader: asyncio.StreamReader) -> None:
        # The client never writes on the video socket; EOF means it left.
        with contextlib.suppress(OSError):
            while await reader.read(1024):
                pass

    async def _write(
        self,
        video: asyncio.StreamWriter,
        pts_us: int,
        payload: bytes,
        *,
        config: bool,
        keyframe: bool,
        into: deque[SentPacket] | None = None,
    ) -> None:
        header = encode_packet_header(pts_us, len(payload), config=config, keyframe=keyframe)
        sent_at = time.monotonic()  # before the write: the reader may run first
        video.write(header + payload)
        (self.device.sent if into is None else into).append(SentPacket(header, payload, sent_at))
        self.device.notify()
        await video.drain()

    async def _sound(self, audio: asyncio.StreamWriter) -> None:
        """AudioEncoder: codec id (or the disabled code), OpusHead, then 20 ms packets."""
        dev = self.device
        with contextlib.suppress(OSError, ConnectionError):
            if dev.audio_capture == "disabled":
                # Streamer.writeDisableStream(false): video goes on, the socket stays open.
                audio.write(struct.pack(">I", CODEC_ID_DISABLED))
                await audio.drain()
                await asyncio.Event().wait()
            if dev.audio_capture == "error":
                # writeDisableStream(true), then the ConfigurationException ends the server.
                audio.write(struct.pack(">I", CODEC_ID_ERROR))
                await audio.drain()
                self.kill(1)
                return
            maker = SoundMaker()
            audio.write(struct.pack(">I", CODEC_ID_OPUS))
            await self._write(
                audio, 0, maker.opus_head, config=True, keyframe=False, into=dev.sent_audio
            )
            next_at = time.monotonic()
            while True:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                click, self.click_pending = self.click_pending, False
                data, _ = maker.frame(click)
                # recreatePts: the Opus encoder's PTS are rebuilt from the clock.
                pts_us = int(time.monotonic() * 1_000_000)
                await self._write(
                    audio, pts_us, data, config=False, keyframe=False, into=dev.sent_audio
                )
                next_at += FRAME_SECONDS

    async def _stream(self, video: asyncio.StreamWriter) -> None:
        dev = self.device
        fps = min(dev.fps, self.max_fps)
        interval = 1.0 / fps
        header_written = False
        index = 0
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                self._restart = False
                self.video_size = self.compute_size()
                encoder = _Encoder(
                    *self.video_size, fps, self.keyframe_interval, self.video_bit_rate
                )
                if not header_written:
                    video.write(struct.pack(">III", CODEC_ID_H264, *self.video_size))
                    header_written = True
                dev.encoder_sessions += 1
                config_sent = False
                repeats = 0
                next_at = time.monotonic()
                while not self._restart:
                    await dev.video_flowing.wait()
                    if self._restart:
                        break
                    still = dev.still and config_sent
                    pts_us = int(time.monotonic() * 1_000_000)
                    # A still screen: the same picture again (a repeat), not a new one.
                    config, media, key = encoder.encode(index, pts_us)
                    if not still:
                        index += 1
                    if config and not config_sent:
                        await self._write(video, 0, config, config=True, keyframe=False)
                        config_sent = True
                    if media:
                        await self._write(video, pts_us, media, config=False, keyframe=key)
                    repeats = repeats + 1 if still else 0
                    if still and repeats >= STILL_REPEATS:
                        # Quiet until the screen changes or the encoder restarts.
                        dev.quiet_spells += 1
                        dev.changed.clear()
                        await dev.changed.wait()
                        next_at = time.monotonic()
                        repeats = 0
                        continue
                    # The device's frame clock; a still screen only gets repeats.
                    next_at += REPEAT_FRAME_DELAY if still else interval
                    delay = max(0.0, next_at - time.monotonic())
                    dev.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await dev.changed.wait()

    async def _control(self, reader: asyncio.StreamReader) -> None:
        """ControlMessageReader.read(), message by message."""
        dev = self.device
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                kind = (await reader.readexactly(1))[0]
                raw = bytes((kind,))

                async def take(n: int) -> bytes:
                    nonlocal raw
                    data = await reader.readexactly(n)
                    raw += data
                    return data

                touch = None
                key = None
                if kind == 0:  # INJECT_KEYCODE
                    key = struct.unpack(">BiII", await take(13))
                elif kind == 1:  # INJECT_TEXT
                    (n,) = struct.unpack(">I", await take(4))
                    await take(n)
                elif kind == 2:  # INJECT_TOUCH_EVENT
                    # readLong(): the pointer id is signed (-1 is the mouse, -2 a generic finger).
                    fields = struct.unpack(">BqiiHHHII", await take(31))
                    touch = self._map_touch(*fields)
                elif kind == 3:  # INJECT_SCROLL_EVENT
                    await take(20)
                elif kind in (4, 8, 10):  # BACK_OR_SCREEN_ON, GET_CLIPBOARD, SET_DISPLAY_POWER
                    await take(1)
                elif kind in (5, 6, 7, 11, 15):
                    pass
                elif kind == 9:  # SET_CLIPBOARD
                    (n,) = struct.unpack(">I", (await take(13))[9:])
                    await take(n)
                elif kind == 12:  # UHID_CREATE
                    await take(6)
                    await take((await take(1))[0])
                    await take(struct.unpack(">H", await take(2))[0])
                elif kind == 13:  # UHID_INPUT
                    await take(2)
                    await take(struct.unpack(">H", await take(2))[0])
                elif kind == 14:  # UHID_DESTROY
                    await take(2)
                elif kind == 16:  # START_APP
                    await take((await take(1))[0])
                elif kind == 17:  # RESET_VIDEO
                    self.restart_encoder()
                else:
                    # ControlProtocolException: the server stops.
                    dev.protocol_errors.append(f"unknown control message type {kind}")
                    self.kill(1)
                    return
                dev.controls.append(Control(kind, raw, time.monotonic(), touch, key))
                dev.notify()

    def _map_touch(
        self,
        action: int,
        pointer_id: int,
        x: int,
        y: int,
        w: int,
        h: int,
        pressure: int,
        action_button: int,
        buttons: int,
    ) -> Touch:
        # PositionMapper: an event made for another video size is dropped;
        # AffineMatrix.apply casts to int, which truncates.
        screen_x = screen_y = None
        if (w, h) == self.video_size and self._track_pointer(action, pointer_id):
            sw, sh = self.device.screen
            screen_x = int(x * sw / w)
            screen_y = int(y * sh / h)
            if action == 0 and self.audio:
                self.click_pending = True  # the game plays a click
        return Touch(
            action, pointer_id, x, y, w, h, pressure, action_button, buttons, screen_x, screen_y
        )

    def _track_pointer(self, action: int, pointer_id: int) -> bool:
        """PointersState.getPointerIndex, then the removal of lifted pointers."""
        if pointer_id not in self.pointers:
            if len(self.pointers) >= MAX_POINTERS:
                return False  # "Too many pointers for touch event": ignored
            self.pointers.append(pointer_id)
        if action == 1:  # ACTION_UP
            self.pointers.remove(pointer_id)
        return True


class FakeDevice:
    def __init__(
        self,
        *,
        serial: str = "fake-phone-1",
        screen: tuple[int, int] = (1080, 1920),
        fps: int = 30,
        name: str = "Playcast FakePhone",
        installed: tuple[str, ...] = (DEFAULT_GAME,),
        version: str = SCRCPY_VERSION,
        server_start_delay: float = 0.05,
        launch_polls: int = 1,
        record_limit: int = 10_000,
        audio_capture: AudioCapture = "opus",
    ) -> None:
        self.serial = serial
        self.screen = screen
        self.fps = fps
        self.name = name
        self.installed = set(installed)
        self.version = version
        self.server_start_delay = server_start_delay
        self.launch_polls = launch_polls
        self.online = True
        self.foreground = LAUNCHER.split("/")[0]
        self.screen_on = True
        self.keyguard_showing = False
        self.keyguard_secure = False  # a PIN: wm dismiss-keyguard cannot dismiss it
        self.files: dict[str, str] = {}  # device path -> sha256
        self.commands: list[list[str]] = []
        self.controls: list[Control] = []
        self.sent: deque[SentPacket] = deque(maxlen=record_limit)
        self.sent_audio: deque[SentPacket] = deque(maxlen=record_limit)
        self.audio_capture: AudioCapture = audio_capture
        # The screen is changing (a game animating) unless held still.
        self.still = False
        self.changed = asyncio.Event()  # the screen changed, or an encoder must restart
        self.quiet_spells = 0  # times an encoder went quiet on a still screen
        self.protocol_errors: list[str] = []
        self.servers: list[_Server] = []
        self.listening: dict[str, _Server] = {}
        self.forwards: dict[int, tuple[asyncio.Server, str]] = {}
        self.encoder_sessions = 0
        self.video_flowing = asyncio.Event()
        self.video_flowing.set()
        self._launching: tuple[str, int] | None = None
        self._adb_server: asyncio.Server | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> FakeDevice:
        self._adb_server = await asyncio.start_server(self._handle_adb, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        for server in self.servers:
            server.kill(137)
        for listener, _ in self.forwards.values():
            listener.close()
        self.forwards.clear()
        if self._adb_server is not None:
            self._adb_server.close()
        # Killed servers end their app_process commands; wait, then insist.
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> FakeDevice:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoint(self) -> str:
        assert self._adb_server is not None
        host, port = self._adb_server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def env(self, log_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Environment for processes that run tests/fake_adb/adb against this device."""
        return adb_env(self.endpoint, log_path)

    # --- observation -----------------------------------------------------------------

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    @property
    def server(self) -> _Server | None:
        """The most recent scrcpy server, running or not."""
        return self.servers[-1] if self.servers else None

    def running_servers(self) -> list[_Server]:
        return [s for s in self.servers if not s.done.is_set()]

    def touches(self) -> list[Touch]:
        return [c.touch for c in self.controls if c.touch is not None]

    def shell_commands(self) -> list[str]:
        """``adb shell`` command lines, joined as the device shell sees them."""
        out = []
        for argv in self.commands:
            rest = _strip_globals(argv)
            if rest and rest[0] == "shell":
                out.append(" ".join(rest[1:]))
        return out

    # --- failure switches ------------------------------------------------------------

    def go_offline(self) -> None:
        """USB unplugged: servers die, forwards go, every command fails."""
        self.online = False
        for server in self.running_servers():
            server.kill(255)
        for listener, _ in self.forwards.values():
            listener.close()
        self.forwards.clear()
        self.notify()

    def go_online(self) -> None:
        self.online = True
        self.notify()

    def kill_server(self, code: int = 137) -> None:
        for server in self.running_servers():
            server.kill(code)
        self.notify()

    def hold_still(self) -> None:
        """The screen stops changing: about a second of repeats, then no video at all."""
        self.still = True

    def animate(self) -> None:
        self.still = False
        self.changed.set()

    def stall_video(self) -> None:
        """A hung encoder: no video, and RESET_VIDEO gets no answer either."""
        self.video_flowing.clear()

    def resume_video(self) -> None:
        self.video_flowing.set()

    def lock(self, secure: bool = False) -> None:
        """The power key: screen off, keyguard up (``secure``: behind a PIN)."""
        self.screen_on, self.keyguard_showing, self.keyguard_secure = False, True, secure

    def wake(self) -> None:
        self.screen_on = True

    def dismiss_keyguard(self) -> None:
        if not self.keyguard_secure:
            self.keyguard_showing = False

    def rotate(self) -> None:
        """Turn the phone: the screen swaps sides and every encoder restarts."""
        self.screen = (self.screen[1], self.screen[0])
        for server in self.running_servers():
            server.restart_encoder()

    # --- adb ---------------------------------------------------------------------

    async def _handle_adb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        reply = _Reply(writer)
        try:
            request = json.loads(await reader.readline())
            argv = [str(a) for a in request["argv"]]
            self.commands.append(argv)
            self.notify()
            code = await self._dispatch(argv, request, reply, reader)
            reply.exit(code)
            await writer.drain()
        except (OSError, ValueError, KeyError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The top of a connection callback: asyncio 3.11 would log a cancelled
            # callback task as an error, so end it quietly.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _dispatch(
        self,
        argv: list[str],
        request: dict[str, Any],
        reply: _Reply,
        reader: asyncio.StreamReader,
    ) -> int:
        serial = None
        if len(argv) >= 2 and argv[0] == "-s":
            serial = argv[1]
        args = _strip_globals(argv)
        if not args:
            reply.err("adb: no command\n")
            return 1
        if args[0] == "forward" and args[1:2] == ["--remove"]:
            # Host-side tunnels can be removed even with the device gone.
            return self._forward(args[1:], reply)
        if serial is not None and serial != self.serial:
            reply.err(f"adb: device '{serial}' not found\n")
            return 1
        if not self.online:
            reply.err("adb: device offline\n")
            return 1
        command = args[0]
        if command == "get-state":
            reply.out("device\n")
            return 0
        if command == "push" and len(args) == 3:
            file = request.get("file") or {}
            if "sha256" not in file:
                reply.err(f"adb: error: cannot stat '{args[1]}': No such file or directory\n")
                return 1
            self.files[args[2]] = file["sha256"]
            reply.out(f"{args[1]}: 1 file pushed, 0 skipped. ({file['size']} bytes in 0.001s)\n")
            return 0
        if command == "forward":
            return await self._forward_async(args[1:], reply)
        if command == "shell":
            return await self._shell(args[1:], reply, reader)
        reply.err(f"fake adb: unsupported command {shlex.join(args)}\n")
        return 1

    def _forward(self, args: list[str], reply: _Reply) -> int:
        if args[:1] == ["--remove"] and len(args) == 2:
            port = int(args[1].removeprefix("tcp:"))
            entry = self.forwards.pop(port, None)
            if entry is None:
                reply.err(f"adb: error: listener '{args[1]}' not found\n")
                return 1
            entry[0].close()
            return 0
        reply.err(f"fake adb: unsupported forward {args}\n")
        return 1

    async def _forward_async(self, args: list[str], reply: _Reply) -> int:
        if len(args) == 2 and args[0] == "tcp:0" and args[1].startswith("localabstract:"):
            name = args[1].removeprefix("localabstract:")

            async def tunnel(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                server = self.listening.get(name)
                if server is None or not self.online:
                    w.close()  # nobody listens on the device: adb drops the connection
                    return
                server.accepts.put_nowait((r, w))

            listener = await asyncio.start_server(tunnel, "127.0.0.1", 0)
            port = listener.sockets[0].getsockname()[1]
            self.forwards[port] = (listener, name)
            reply.out(f"{port}\n")
            return 0
        return self._forward(args, reply)

    async def _shell(self, args: list[str], reply: _Reply, reader: asyncio.StreamReader) -> int:
        words = " ".join(args).split()  # what the device's sh sees
        if words and words[0].startswith("CLASSPATH="):
            return await self._app_process(words, reply, reader)
        line = " ".join(words)
        if ";" in line:  # a script: each command in turn, as sh runs it
            code = 0
            for part in line.split(";"):
                if part.strip():
                    code = await self._shell(part.split(), reply, reader)
            return code
        if words[:2] == ["input", "keyevent"] and len(words) == 3:
            if words[2] in WAKE_KEYS:
                self.wake()
            return 0
        if words == ["wm", "dismiss-keyguard"]:
            self.dismiss_keyguard()
            return 0
        if words[:2] == ["am", "force-stop"] and len(words) == 3:
            if self.foreground == words[2]:
                self.foreground = LAUNCHER.split("/")[0]
            if self._launching and self._launching[0] == words[2]:
                self._launching = None
            return 0
        if words[:2] == ["monkey", "-p"] and len(words) >= 3:
            package = words[2]
            if package not in self.installed:
                reply.out("** No activities found to run, monkey aborted.\n")
                return 252
            self._launching = (package, self.launch_polls)
            reply.out("Events injected: 1\n")
            return 0
        if words == ["dumpsys", "activity", "activities"]:
            # Behind the keyguard a launched activity is not resumed.
            if self._launching is not None and not self.keyguard_showing:
                package, polls = self._launching
                self._launching = (package, polls - 1) if polls > 1 else None
                if polls <= 1:
                    self.foreground = package
            reply.out(self._dumpsys())
            return 0
        if words[:2] == ["pm", "path"] and len(words) == 3:
            if words[2] in self.installed:
                reply.out(f"package:/data/app/~~fake/{words[2]}-1/base.apk\n")
                return 0
            return 1
        reply.err(f"/system/bin/sh: {line}: inaccessible or not found\n")
        return 127

    def _dumpsys(self) -> str:
        top = f"{self.foreground}/.Main" if self.foreground != LAUNCHER.split("/")[0] else LAUNCHER
        record = f"ActivityRecord{{4c5d2e1 u0 {top} t57}}"
        return (
            "ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)\n"
            "Display #0 (activities from top to bottom):\n"
            f"  * Task{{9f0e1 #57 type=standard A=10123:{top.split('/')[0]}}}\n"
            f"  ResumedActivity: {record}\n"
            f"  topResumedActivity={record}\n"
        )

    async def _app_process(
        self, words: list[str], reply: _Reply, reader: asyncio.StreamReader
    ) -> int:
        head = [f"CLASSPATH={DEVICE_SERVER_PATH}", "app_process", "/", SERVER_CLASS]
        if words[:4] != head or len(words) < 5:
            reply.err(f"fake device: unexpected app_process command {words[:5]}\n")
            return 1
        if DEVICE_SERVER_PATH not in self.files:
            reply.err(f"Error: Could not find class '{SERVER_CLASS}'\n")
            return 1
        if words[4] != self.version:
            reply.out(
                f"[server] ERROR: The server version ({self.version}) does not match "
                f"the client ({words[4]})\n"
            )
            return 1
        options: dict[str, str] = {}
        for word in words[5:]:
            key, _, value = word.partition("=")
            if key not in KNOWN_OPTIONS or not value:
                reply.out(f"[server] ERROR: Unknown server option: {word}\n")
                return 1
            options[key] = value
        wanted = {"tunnel_forward": "true", "control": "true"}
        defaults = {"tunnel_forward": "false", "control": "true"}
        for key, value in wanted.items():
            if options.get(key, defaults[key]) != value:
                reply.out(f"[server] ERROR: fake device needs {key}={value}\n")
                return 1
        if options.get("video_codec", "h264") != "h264" or "scid" not in options:
            reply.out("[server] ERROR: fake device needs video_codec=h264 and a scid\n")
            return 1
        if options.get("audio", "true") == "true" and options.get("audio_codec", "opus") != "opus":
            reply.out("[server] ERROR: fake device needs audio_codec=opus\n")
            return 1
        await asyncio.sleep(self.server_start_delay)  # JVM start-up on the device
        server = _Server(self, options)
        self.servers.append(server)
        self.listening[server.socket_name] = server
        self.notify()
        reply.out(f"[server] INFO: Device: [Playcast] {self.name} (Android 14)\n")
        run = asyncio.create_task(server.run())
        hangup = asyncio.create_task(reader.read())  # the adb client went away
        await asyncio.wait([run, hangup], return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            server.kill(129)
            await run
        hangup.cancel()
        if server.exit_code == 255:
            reply.err("error: device offline\n")
        return server.exit_code


def adb_env(endpoint: str, log_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What tests/fake_adb/adb needs: where to relay, with which Python (this
    one, started without site: milliseconds, as adb), and where to log."""
    env = {"PLAYCAST_FAKE_ADB_DEVICE": endpoint, "PLAYCAST_FAKE_ADB_PYTHON": sys.executable}
    if log_path is not None:
        env["PLAYCAST_FAKE_ADB_LOG"] = os.fspath(log_path)
    return env


def _strip_globals(argv: list[str]) -> list[str]:
    """adb's global options (-s SERIAL, -d, -e, -t ID) before the command."""
    i = 0
    while i < len(argv):
        if argv[i] in ("-s", "-t", "-H", "-P", "-L"):
            i += 2
        elif argv[i] in ("-d", "-e", "-a"):
            i += 1
        else:
            break
    return argv[i:]


async def _main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake phone for tests/fake_adb/adb.")
    parser.add_argument("--serial", default="fake-phone-1")
    parser.add_argument("--width", type=int, default=1080)
    parser.add_argument("--height", type=int, default=1920)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    async with FakeDevice(
        serial=args.serial, screen=(args.width, args.height), fps=args.fps
    ) as dev:
        print(f"export PLAYCAST_FAKE_ADB_DEVICE={dev.endpoint}", flush=True)
        print(f"# adb: {FAKE_ADB}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
