"""Game sound: what a backend with sound hands the worker, and the synthetic game's own.

Sound travels as Opus packets at 48 kHz from the backend to the browser
without decoding or re-encoding: a phone's scrcpy server encodes them (20 ms
each), and the synthetic game encodes its own here with PyAV's libopus (10 ms
each: half the wait for the next packet after a touch, and a lower floor for
the browser's audio jitter buffer; see docs/performance.md). A backend
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
# The synthetic game's: Opus allows 2.5, 5, 10, 20, 40 and 60 ms.
GAME_FRAME_SAMPLES: Final = 480
AUDIO_CLOCK: Final = fractions.Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One Opus packet (10 or 20 ms of sound)."""

    data: bytes
    pts: int  # in AUDIO_CLOCK units (samples)
    # time.monotonic() when the packet was made (or read from the device).
    captured_at: float
    # Its loudness as RFC 6464 puts it (-dBov, 0 loudest to 127), when the
    # backend knows it: the synthetic game does; a phone's packets are passed
    # on undecoded, so None. Sent in the RTP header extension a browser reports
    # in RTCRtpReceiver.getSynchronizationSources() (the benchmark's ear).
    level: int | None = None


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


def level_dbov(pcm: npt.NDArray[np.int16]) -> int:
    """RFC 6464's level of 16-bit samples: their RMS in -dBov, 0 (full scale) to 127."""
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) / 32768.0
    if rms <= 0.0:
        return 127
    return min(127, max(0, round(-20.0 * math.log10(rms))))


class SoundMaker:
    """A quiet hum with a short click wherever a touch went down, in Opus packets.

    ``frame(click)`` makes the next packet (``frame_samples`` long: 20 ms by
    default, as a phone's): ``click`` says whether a touch went down since the
    previous one (the click then starts at the frame's first sample, so it is
    heard at most one frame after the touch).
    """

    def __init__(self, bit_rate: int = 64_000, frame_samples: int = FRAME_SAMPLES) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        ctx.bit_rate = bit_rate
        ctx.time_base = AUDIO_CLOCK
        # CELT low delay: 2.5 ms of look-ahead instead of 6.5 ms (the least
        # libopus has: the MDCT's overlap).
        ctx.options = {
            "application": "lowdelay",
            "frame_duration": str(1000 * frame_samples / SAMPLE_RATE),
        }
        ctx.open()
        self._ctx = ctx
        self.opus_head = bytes(ctx.extradata or b"")
        self.frame_samples = frame_samples
        self.frame_seconds = frame_samples / SAMPLE_RATE
        self._index = 0
        # The click spans more than one short frame: its tail goes in the next ones.
        click_len = round(CLICK_SECONDS * SAMPLE_RATE)
        span = -(-click_len // frame_samples) * frame_samples
        t = np.arange(span) / SAMPLE_RATE
        envelope = np.exp(-np.arange(span) / (click_len / 4))
        envelope[click_len:] = 0.0
        self._click = CLICK_LEVEL * envelope * np.sin(2 * math.pi * CLICK_HZ * t)
        self._click_left = 0  # samples of the current click still to play
        self._t = t[:frame_samples]
        self.last_level = 127

    def frame(self, click: bool) -> tuple[bytes, int]:
        """The next Opus packet and its PTS (samples since the first frame)."""
        n = self.frame_samples
        start = self._index * n
        # Phase from the running sample count, so frames join without a step.
        signal = BACKGROUND_LEVEL * np.sin(2 * math.pi * 110.0 * (self._t + start / SAMPLE_RATE))
        if click:
            self._click_left = len(self._click)
        if self._click_left:
            at = len(self._click) - self._click_left
            signal = signal + self._click[at : at + n]
            self._click_left -= n
        packet = self.encode(signal)
        self._index += 1
        return packet, start

    def skip(self, frames: int) -> None:
        """Let ``frames`` frames' time pass unmade: the next one's PTS is that much later."""
        self._index += frames
        self._click_left = max(0, self._click_left - frames * self.frame_samples)

    def encode(self, mono: npt.NDArray[np.float64]) -> bytes:
        pcm = np.clip(mono * 32767.0, -32768, 32767).astype(np.int16)
        self.last_level = level_dbov(pcm)
        stereo = np.repeat(pcm, CHANNELS).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._index * self.frame_samples
        frame.time_base = AUDIO_CLOCK
        # libopus returns one packet per frame, at once (no buffering).
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


def game_audio(backend: object) -> GameAudio | None:
    """The backend's sound interface, if its game has one."""
    return backend if isinstance(backend, GameAudio) else None
