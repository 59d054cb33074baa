"""Game sound: what a backend with sound hands the worker, and the synthetic game's own.

Sound travels as Opus packets, 20 ms each at 48 kHz, from the backend to the
browser without decoding or re-encoding: a phone's scrcpy server encodes them,
and the synthetic game encodes its own here with PyAV's libopus. A backend
with sound also implements ``GameAudio``; the worker asks for sound only from
those, and a session without it is a video-only session, not a failure.
"""

from __future__ import annotations

import abc
import fractions
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import av
import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 2
FRAME_SAMPLES: Final = 960  # 20 ms, the frame size of scrcpy's Opus and of WebRTC's
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
AUDIO_CLOCK: Final = fractions.Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One Opus packet (20 ms of sound)."""

    data: bytes
    pts: int  # in AUDIO_CLOCK units (samples)
    # time.monotonic() when the packet was made (or read from the device).
    captured_at: float


@dataclass(frozen=True, slots=True)
class AudioStatus:
    """Whether a backend has sound right now; ``detail`` says why not, for logs and status."""

    codec: str | None  # "opus" while it has sound, None for video only
    detail: str = ""


class GameAudio(abc.ABC):
    """Implemented, next to GameBackend, by backends whose game has sound."""

    @property
    @abc.abstractmethod
    def audio_status(self) -> AudioStatus:
        """Sound or not, as far as the backend knows now."""

    @abc.abstractmethod
    def audio_packets(self) -> AsyncIterator[AudioPacket]:
        """Opus packets from now on, one consumer at a time.

        Ends when the sound does; the video goes on regardless (a game's sound
        failing is not the session failing).
        """


# --- the synthetic game's sound ----------------------------------------------------

CLICK_SECONDS: Final = 0.012
CLICK_HZ: Final = 2_000.0
CLICK_LEVEL: Final = 0.7  # peak, full scale 1.0
BACKGROUND_LEVEL: Final = 0.01  # about -40 dBFS: there, but quiet
# What a listener (test or benchmark) takes for the click: far above the
# background, well below the click's peak even after Opus.
CLICK_THRESHOLD: Final = 0.25


class SoundMaker:
    """A quiet hum with a short click wherever a touch went down, in 20 ms Opus packets.

    ``frame(clicks)`` makes the next 20 ms: ``clicks`` says whether a touch
    went down since the previous one (the click then starts at the frame's
    first sample, so it is heard at most one frame after the touch).
    """

    def __init__(self, bit_rate: int = 64_000) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        ctx.bit_rate = bit_rate
        ctx.time_base = AUDIO_CLOCK
        # CELT low delay: 2.5 ms of look-ahead instead of 6.5 ms.
        ctx.options = {"application": "lowdelay", "frame_duration": "20"}
        ctx.open()
        self._ctx = ctx
        self.opus_head = bytes(ctx.extradata or b"")
        self._index = 0
        t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
        click_len = round(CLICK_SECONDS * SAMPLE_RATE)
        envelope = np.zeros(FRAME_SAMPLES)
        envelope[:click_len] = np.exp(-np.arange(click_len) / (click_len / 4))
        self._click = CLICK_LEVEL * envelope * np.sin(2 * math.pi * CLICK_HZ * t)
        self._t = t

    def frame(self, click: bool) -> tuple[bytes, int]:
        """The next Opus packet and its PTS (samples since the first frame)."""
        start = self._index * FRAME_SAMPLES
        # Phase from the running sample count, so frames join without a step.
        hum = BACKGROUND_LEVEL * np.sin(2 * math.pi * 110.0 * (self._t + start / SAMPLE_RATE))
        signal = hum + self._click if click else hum
        packet = self.encode(signal)
        self._index += 1
        return packet, start

    def encode(self, mono: npt.NDArray[np.float64]) -> bytes:
        pcm = np.clip(mono * 32767.0, -32768, 32767).astype(np.int16)
        stereo = np.repeat(pcm, CHANNELS).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._index * FRAME_SAMPLES
        frame.time_base = AUDIO_CLOCK
        # libopus returns one packet per 20 ms frame, at once (no buffering).
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


def game_audio(backend: object) -> GameAudio | None:
    """The backend's sound interface, if its game has one."""
    return backend if isinstance(backend, GameAudio) else None
