"""The Android backend's settings, the ladder of encodings its video moves
along, and the scrcpy server options built from them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from playcast.backends.scrcpy import SCRCPY_VERSION, ServerOptions
from playcast.protocol import DEFAULT_GAME

# The ladder: each rung 0.6 times the bit rate of the one above; the size
# stays until a rung's rate is under what the size needs (FULL_SIZE_BPS at
# 1280, scaling with the area), then shrinks by 3/4 a rung; it ends under
# LADDER_FLOOR.
RUNG_RATIO: Final = 0.6
FULL_SIZE_BPS: Final = 1_200_000
SIZE_RATIO: Final = 0.75
MIN_SIZE: Final = 480
LADDER_FLOOR: Final = 250_000


@dataclass(frozen=True, slots=True)
class Rung:
    """One encoding the phone can be restarted with."""

    bit_rate: int
    max_size: int


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
    # The ladder's hysteresis: seconds under a rung before stepping down, and
    # with room over it before trying the next one up.
    ladder_down: float = 1.0
    ladder_up: float = 10.0


def ladder(settings: AndroidSettings) -> tuple[Rung, ...]:
    """The phone's encodings, top (its settings) first: bit rate, then size."""
    rungs = []
    rate, size = settings.video_bit_rate, settings.max_size
    while True:
        rungs.append(Rung(rate, size))
        rate = int(rate * RUNG_RATIO)
        if rate < LADDER_FLOOR:
            return tuple(rungs)
        while size > MIN_SIZE and rate < FULL_SIZE_BPS * (size / 1280) ** 2:
            size = max(MIN_SIZE, int(size * SIZE_RATIO) & ~7)


def server_options(
    settings: AndroidSettings, audio: bool, rung: Rung | None = None
) -> ServerOptions:
    """The one place the scrcpy server's options are built: its video (size,
    bit rate, frame rate, keyframes, encoder options: the settings', or a
    rung's) and sound, for one start of the server (a fresh ``scid`` names its
    socket)."""
    s = settings
    return ServerOptions(
        scid=secrets.randbits(31),
        version=s.scrcpy_version,
        max_size=s.max_size if rung is None else rung.max_size,
        video_bit_rate=s.video_bit_rate if rung is None else rung.bit_rate,
        max_fps=s.max_fps,
        keyframe_interval=s.keyframe_interval,
        extra_codec_options=s.codec_options,
        audio=audio,
        audio_bit_rate=s.audio_bit_rate,
    )
