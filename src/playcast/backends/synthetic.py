"""A small playable game drawn in software: the worker's backend without a phone.

It goes through the same path a phone's stream will: pictures are encoded here
(PyAV: libx264 for H.264, libvpx for VP8, whichever the session's browser
decodes) and the worker only ever sees encoded pictures.
Frames come on a steady clock, and one comes at once when input arrives, so
what a player does shows up in the next packet, not at the next tick.

Its video follows the player's link (``set_target_bitrate``): the encoder's
bit rate first (h264.py, vp8.py); at the bottom, fewer frames a second and
then a smaller picture (``BOTTOM``, a ladder with hysteresis), also when the
encoder cannot hold the target at this rung (``OVERSHOOT``). Back-pressure
from the worker's pacer skips pictures (``MAX_BACKLOG``) rather than queue
them.

The game has sound too (``GameAudio``): a quiet hum, and a short click in the
next 10 ms Opus packet after each touch-down, so sound is testable end to end
just as the white disc makes video testable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from playcast.backends.arena import ArenaScene, Mark, Plane
from playcast.backends.audio import (
    GAME_FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioPacket,
    AudioStatus,
    GameAudio,
    SoundMaker,
)
from playcast.backends.base import H264, VP8, BackendError, GameBackend, Health, VideoPacket
from playcast.backends.bottom import BOTTOM, OutputRate, bottom_ladder
from playcast.backends.costly import SCENES
from playcast.backends.h264 import EncodedPicture, EncoderSettings, H264Encoder
from playcast.backends.vp8 import Vp8Encoder
from playcast.envflags import add_flag
from playcast.protocol import DEFAULT_GAME

log = logging.getLogger(__name__)

MAX_FPS = 60
MARK_SECONDS = 0.6  # the issue asks for at least 500 ms
KEY_FLASH_SECONDS = 0.3
# Encoded packets not yet taken by the consumer before ticks are skipped: a
# skipped picture is never encoded, so the stream stays decodable and never
# builds up delay behind a slow sender (or the worker's pacer, which holds the
# sender while the link is busy): at most three pictures wait.
MAX_BACKLOG = 3
# Marks drawn at once: every touch-down and move adds one, and each is drawn on
# every frame until it expires, so a flood of moves would make every frame
# slower to draw. The oldest go first (a long drag keeps its newest trail).
MAX_MARKS = 64
# H.264 first: browsers decode it in hardware where they can, and a browser
# that names no codecs (protocol v1) is taken to want it.
ENCODERS = {H264: H264Encoder, VP8: Vp8Encoder}
DEFAULT_CODECS = (H264, VP8)


AUDIO_FRAME_MS = (2.5, 5.0, 10.0, 20.0)  # Opus frame lengths (CELT low delay)
# Sound more than this behind its clock (a stalled loop) skips what it
# missed: that time passes unheard and the next packet's timestamp is the
# clock's, as a sound card's is after an overrun (and a phone's: scrcpy takes
# its PTS from the clock). Caught up in a burst instead, every packet of the
# burst reaches the browser late for its timestamp, and its audio jitter
# buffer answers by holding all later sound back about as long as the stall
# lasted (measured on a busy machine: 72 to 400 ms instead of 30 to 40 after
# a stall, and slow to shrink back).
AUDIO_MAX_LATE = 0.015


class SyntheticBackend(GameBackend, GameAudio):
    def __init__(
        self,
        game: str = DEFAULT_GAME,
        width: int = 720,
        height: int = 1280,
        fps: int = 30,
        preset: str = "ultrafast",
        codecs: tuple[str, ...] = DEFAULT_CODECS,
        audio_frame_samples: int = GAME_FRAME_SAMPLES,
        scene: str = "arena",
    ) -> None:
        if not 1 <= fps <= MAX_FPS:
            raise ValueError(f"fps must be within 1..{MAX_FPS}")
        if scene not in SCENES:
            raise ValueError(f"scene must be one of {', '.join(SCENES)}, not {scene!r}")
        unknown = [c for c in codecs if c not in ENCODERS]
        if unknown or not codecs:
            raise ValueError(f"codecs must be some of {', '.join(ENCODERS)}, not {codecs!r}")
        self.game = game
        self.codecs = tuple(codecs)
        self.codec: str | None = None  # of the current (or last) stream
        self.fps = fps
        self.audio_frame_samples = audio_frame_samples
        self._settings = EncoderSettings(width=width, height=height, fps=fps, preset=preset)
        self.scene = scene
        self._scene: ArenaScene = SCENES[scene](width, height)
        self._executor: ThreadPoolExecutor | None = None
        # The current consumer's token; a reset or stop clears it, which ends
        # that stream even if its generator is finalized only later.
        self._consumer: object | None = None
        self._wake = asyncio.Event()
        self._keyframe_wanted = True
        self._origin = time.monotonic()
        self._marks: deque[Mark] = deque(maxlen=MAX_MARKS)
        self._pointers: dict[int, tuple[float, float]] = {}
        self._key_flash_until = 0.0
        self._failure: str | None = None
        self._target: int | None = None  # video bit/s the player's link carries
        self._encoding = ""
        self._audio_consumer: object | None = None
        self._click_pending = False
        # Counters a test or benchmark can read; reset starts them again.
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.resets = 0
        self.clicks = 0
        self.audio_frames_skipped = 0

    @property
    def size(self) -> tuple[int, int]:
        return self._settings.width, self._settings.height

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic")
        self._fresh_game()

    async def stop(self) -> None:
        self._consumer = None
        self._audio_consumer = None
        self._wake.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def reset(self) -> None:
        self._consumer = None
        self._audio_consumer = None
        self._wake.set()
        self._fresh_game()
        self.resets += 1

    def _fresh_game(self) -> None:
        self._origin = time.monotonic()
        self._marks.clear()
        self._pointers.clear()
        self._key_flash_until = 0.0
        self._keyframe_wanted = True
        self._failure = None
        self._target = None
        self._click_pending = False
        self.frames = self.keyframes = self.keyframe_requests = self.clicks = 0
        self.audio_frames_skipped = 0

    def _scene_time(self) -> float:
        return time.monotonic() - self._origin

    async def packets(self, codec: str = H264) -> AsyncIterator[VideoPacket]:
        executor = self._executor
        if executor is None:
            raise BackendError("synthetic backend is not started")
        if self._consumer is not None:
            raise BackendError("synthetic backend already has a consumer")
        if self._failure is not None:
            raise BackendError(self._failure)
        if codec not in self.codecs:
            raise BackendError(f"synthetic backend does not send {codec} (only {self.codecs})")
        token = self._consumer = object()
        self._keyframe_wanted = True
        self.codec = codec
        queue: asyncio.Queue[VideoPacket] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(token, codec, executor, queue))
        get: asyncio.Future[VideoPacket] | None = None
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield get.result()
                    continue
                get.cancel()
                if producer.exception() is not None:
                    self.fail(f"encoder failed: {producer.exception()!r}")
                    raise BackendError(f"encoder failed: {producer.exception()!r}")
                if self._failure is not None:
                    raise BackendError(self._failure)
                return  # stopped or reset
        finally:
            if get is not None:
                get.cancel()  # cancelled or closed while waiting: no orphan task
            if self._consumer is token:
                self._consumer = None
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    def set_target_bitrate(self, bps: int | None) -> None:
        self._target = bps

    @property
    def encoding(self) -> str:
        return self._encoding

    async def _rung_encoder(
        self,
        rung: int,
        codec: str,
        executor: ThreadPoolExecutor,
        previous: H264Encoder | Vp8Encoder | None = None,
    ) -> tuple[H264Encoder | Vp8Encoder, ArenaScene, float]:
        """The encoder (carrying on from ``previous``) and scene for a rung of
        ``BOTTOM``, and its frame interval."""
        fps_factor, size_factor, _ = BOTTOM[rung]
        s = self._settings
        fps = max(1, round(s.fps * fps_factor))
        width, height = (round(d * size_factor) & ~1 for d in (s.width, s.height))
        settings = EncoderSettings(width, height, fps, s.preset, s.crf, s.threads)
        scene = self._scene
        if (width, height) != (scene.width, scene.height):
            make = SCENES[self.scene]
            scene = await asyncio.get_running_loop().run_in_executor(executor, make, width, height)
        encoder = ENCODERS[codec](settings)
        encoder.carry_on(previous)
        return encoder, scene, 1.0 / fps

    async def _produce(
        self,
        token: object,
        codec: str,
        executor: ThreadPoolExecutor,
        queue: asyncio.Queue[VideoPacket],
    ) -> None:
        loop = asyncio.get_running_loop()
        bottom = bottom_ladder(self._settings)
        output = OutputRate()
        encoder, scene, interval = await self._rung_encoder(0, codec, executor)
        min_gap = 1.0 / MAX_FPS
        last_input_frame = -1.0
        last_pts = -1
        next_tick = loop.time()
        while self._consumer is token:
            now = loop.time()
            if now < next_tick:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_tick - now):
                        await self._wake.wait()
            self._wake.clear()
            if self._consumer is not token:
                return
            now = loop.time()
            by_input = now < next_tick
            if by_input:
                if now - last_input_frame < min_gap:
                    # Input faster than MAX_FPS (a drag): draw it in the next slot.
                    await asyncio.sleep(last_input_frame + min_gap - now)
                    now = loop.time()
                last_input_frame = now
            # An input frame restarts the cadence, so a steady drag does not
            # add ticks on top of its own frames.
            next_tick = now + interval if by_input else max(next_tick + interval, now)
            if queue.qsize() >= MAX_BACKLOG:
                continue
            target = self._target
            if encoder.mode != "CRF" and output.over(now, target):
                target = min(target or 0, int(0.99 * bottom.needs[bottom.rung]))
            rung = bottom.update(now, target)
            if rung is not None:
                encoder, scene, interval = await self._rung_encoder(rung, codec, executor, encoder)
                log.info("synthetic video: %s", self._describe(encoder, codec))
                output.clear()
                if self._consumer is not token:
                    return
            encoder.retarget(self._target)
            keyframe, self._keyframe_wanted = self._keyframe_wanted, False
            t = self._scene_time()
            while self._marks and self._marks[0].until <= t:
                self._marks.popleft()  # marks expire in the order they were made
            marks = tuple(self._marks)
            flash = self._key_flash_until > t
            captured_at = time.monotonic()
            pts = max(last_pts + 1, round((captured_at - self._origin) * 90000))
            picture = await loop.run_in_executor(
                executor, self._draw_and_encode, scene, encoder, t, marks, flash, pts, keyframe
            )
            if self._consumer is not token:
                return  # reset while encoding: this picture belongs to the old game
            self._encoding = self._describe(encoder, codec)
            output.add(loop.time(), len(picture.data))
            last_pts = pts
            self.frames += 1
            self.keyframes += picture.keyframe
            queue.put_nowait(VideoPacket(picture.data, pts, picture.keyframe, captured_at))

    @staticmethod
    def _describe(encoder: H264Encoder | Vp8Encoder, codec: str) -> str:
        s = encoder.settings
        if isinstance(encoder, H264Encoder):
            rate = None if encoder.abr is None else encoder.target
        else:
            rate = encoder.bitrate
        at = f" {rate / 1e6:.2f} Mbit/s" if rate is not None else ""
        return f"{codec} {encoder.mode}{at}, {s.width}x{s.height}, {s.fps} fps"

    @staticmethod
    def _draw_and_encode(
        scene: ArenaScene,
        encoder: H264Encoder | Vp8Encoder,
        t: float,
        marks: tuple[Mark, ...],
        flash: bool,
        pts: int,
        keyframe: bool,
    ) -> EncodedPicture:
        picture: Plane = scene.render(t, marks, flash)
        return encoder.encode(picture, pts, keyframe)

    # --- sound -------------------------------------------------------------------

    @property
    def audio_status(self) -> AudioStatus:
        return AudioStatus("opus", "synthetic: a click at each touch-down")

    async def audio_packets(self) -> AsyncIterator[AudioPacket]:
        if self._executor is None:
            raise BackendError("synthetic backend is not started")
        if self._audio_consumer is not None:
            raise BackendError("synthetic backend's sound already has a consumer")
        token = self._audio_consumer = object()
        maker = SoundMaker(frame_samples=self.audio_frame_samples)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while self._audio_consumer is token:
                # The sound card's clock: one packet per tick, each made as its
                # tick comes (not ahead), so a click waits at most one frame.
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if self._audio_consumer is not token:
                        return
                elif -delay > AUDIO_MAX_LATE:
                    missed = int(-delay / maker.frame_seconds)
                    maker.skip(missed)
                    next_at += missed * maker.frame_seconds
                    self.audio_frames_skipped += missed
                    log.debug("synthetic sound: %d frames skipped after a stall", missed)
                click, self._click_pending = self._click_pending, False
                data, pts = maker.frame(click)
                self.clicks += click
                yield AudioPacket(data, pts, time.monotonic(), maker.last_level)
                next_at += maker.frame_seconds
        finally:
            if self._audio_consumer is token:
                self._audio_consumer = None

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._keyframe_wanted = True

    async def inject_touch(
        self, action: Literal["down", "move", "up", "cancel"], pointer_id: int, x: float, y: float
    ) -> None:
        if action in ("up", "cancel"):
            self._pointers.pop(pointer_id, None)
            return
        if action == "move" and pointer_id not in self._pointers:
            return  # a move without its down (lost, or from before a reset)
        if action == "down" and pointer_id not in self._pointers:
            self._click_pending = True
        self._pointers[pointer_id] = (x, y)
        self._marks.append(Mark(x, y, self._scene_time() + MARK_SECONDS))
        self._wake.set()

    async def inject_key(self, action: Literal["down", "up"], key: str) -> None:
        if action == "down":
            self._key_flash_until = self._scene_time() + KEY_FLASH_SECONDS
            self._wake.set()

    def fail(self, detail: str) -> None:
        """The game is down (the encoder died, or a drill says so) until ``reset``.

        The current stream ends, ``health()`` reports it, and watchers hear it at once.
        """
        if self._failure is not None:
            return
        self._failure = detail
        self._consumer = None
        self._wake.set()
        log.warning("synthetic game failed: %s", detail)
        self.report_failure(detail)

    async def health(self) -> Health:
        if self._executor is None:
            return Health(False, "not started")
        if self._failure is not None:
            return Health(False, self._failure)
        scene = "" if self.scene == "arena" else f" ({self.scene} scene)"
        return Health(True, f"synthetic {self.size[0]}x{self.size[1]} @ {self.fps} fps{scene}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--width", type=int, default=720, help="synthetic video width")
    add_flag(parser, "--height", type=int, default=1280, help="synthetic video height")
    add_flag(parser, "--fps", type=int, default=30, help=f"synthetic frame rate (1..{MAX_FPS})")
    add_flag(parser, "--x264-preset", default="ultrafast", help="synthetic libx264 preset")
    add_flag(
        parser,
        "--audio-frame-ms",
        type=float,
        default=1000 * GAME_FRAME_SAMPLES / SAMPLE_RATE,
        choices=AUDIO_FRAME_MS,
        help="synthetic Opus frame length in ms (20: as a phone's scrcpy sends)",
    )
    add_flag(
        parser,
        "--synthetic-scene",
        default="arena",
        choices=sorted(SCENES),
        help="synthetic picture: arena (flat colours, ~0.8 Mbit/s) or costly"
        " (textures and motion, 3-4 Mbit/s like a real game's)",
    )
    add_flag(
        parser,
        "--codecs",
        default=",".join(DEFAULT_CODECS),
        help=f"video codecs the synthetic game sends, preferred first (of {', '.join(ENCODERS)})",
    )


def create_backend(args: argparse.Namespace) -> GameBackend:
    codecs = tuple(c.strip().upper() for c in args.codecs.split(",") if c.strip())
    try:
        return SyntheticBackend(
            game=args.game,
            width=args.width,
            height=args.height,
            fps=args.fps,
            preset=args.x264_preset,
            codecs=codecs,
            audio_frame_samples=round(args.audio_frame_ms * SAMPLE_RATE / 1000),
            scene=args.synthetic_scene,
        )
    except ValueError as exc:
        raise SystemExit(f"synthetic backend: {exc}") from None
