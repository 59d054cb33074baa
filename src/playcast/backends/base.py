"""The one interface every game backend implements.

The worker knows nothing else about a backend: the synthetic game and a real
Android device both hand it encoded video (H.264 access units; the synthetic
game also VP8 frames) and take normalized input, so the worker's session logic
is the same for both.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

VIDEO_CLOCK = Fraction(1, 90000)

# Video codecs by their WebRTC names (RTCRtpCodec mimeType without "video/"),
# as register and join carry them.
H264: Final = "H264"
VP8: Final = "VP8"


@dataclass(frozen=True, slots=True)
class VideoPacket:
    """One encoded picture: an H.264 access unit in Annex B form (SPS/PPS in
    front of keyframes), or one VP8 frame."""

    data: bytes
    pts: int  # in VIDEO_CLOCK units
    keyframe: bool
    # time.monotonic() when the picture was made (or read from the device):
    # lets benchmarks split latency into backend and transport.
    captured_at: float


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


class BackendError(RuntimeError):
    """The game or device is unusable; the worker ends the session as failed."""


class GameBackend(abc.ABC):
    """Lifecycle: ``start`` once, ``reset`` between sessions, ``stop`` at exit."""

    game: str
    # What ``packets`` can encode, in this backend's order of preference: the
    # worker registers with it, and the server picks one per session.
    codecs: tuple[str, ...] = (H264,)

    @property
    @abc.abstractmethod
    def size(self) -> tuple[int, int]:
        """Current video width and height in pixels."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Bring the game up; raise BackendError if it cannot be."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release everything; safe to call twice."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Put the game back in a fresh state for the next player."""

    @abc.abstractmethod
    def packets(self, codec: str = H264) -> AsyncIterator[VideoPacket]:
        """Video encoded with ``codec`` (one of ``codecs``) from now on; ends (or
        raises BackendError) on failure, and on a codec it cannot send.

        Only one consumer at a time; the first packet is a keyframe.
        """

    @abc.abstractmethod
    def request_keyframe(self) -> None:
        """Make the next packet a keyframe (new viewer, packet loss)."""

    @abc.abstractmethod
    async def inject_touch(
        self, action: Literal["down", "move", "up", "cancel"], pointer_id: int, x: float, y: float
    ) -> None:
        """Touch at normalized picture coordinates (0..1)."""

    @abc.abstractmethod
    async def inject_key(self, action: Literal["down", "up"], key: str) -> None:
        """A key by its DOM ``KeyboardEvent.key`` name, e.g. ``Escape``."""

    @abc.abstractmethod
    async def health(self) -> Health:
        """Cheap liveness check, polled by the worker while available."""
