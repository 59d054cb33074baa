"""The one interface every game backend implements.

The worker knows nothing else about a backend: the synthetic game and a real
Android device both hand it encoded video (H.264 access units; the synthetic
game also VP8 frames) and take normalized input, so the worker's session logic
is the same for both.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

VIDEO_CLOCK = Fraction(1, 90000)

log = logging.getLogger(__name__)

FailureListener = Callable[[str], None]
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
    """Lifecycle: ``start`` once, ``reset`` between sessions, ``stop`` at exit.

    Health is pushed as well as polled: a backend that notices its game going
    down on its own (a socket closing, a process exiting, video stalling) calls
    ``report_failure``, and the worker hears it at once instead of at its next
    ``health()`` poll.
    """

    game: str
    # What ``packets`` can encode, in this backend's order of preference: the
    # worker registers with it, and the server picks one per session.
    codecs: tuple[str, ...] = (H264,)

    def watch_failures(self, listener: FailureListener) -> Callable[[], None]:
        """Call ``listener(detail)`` on every pushed failure; returns the unsubscribe."""
        listeners = self._failure_listeners()
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    def report_failure(self, detail: str) -> None:
        """Tell every watcher the game is down (called by implementations)."""
        for listener in list(self._failure_listeners()):
            try:
                listener(detail)
            except Exception:
                # A watcher's bug must not stop the backend or the other watchers.
                log.exception("failure listener %r raised", listener)

    def _failure_listeners(self) -> list[FailureListener]:
        # Created on first use, so implementations need not call super().__init__().
        listeners: list[FailureListener] | None = self.__dict__.get("_listeners")
        if listeners is None:
            listeners = self.__dict__["_listeners"] = []
        return listeners

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

    def set_target_bitrate(self, bps: int | None) -> None:
        """Follow the player's link: about ``bps`` bit/s of video from now on
        (None: the backend's own rate). Called on every change of the worker's
        estimate and about once a second besides, so a backend can apply
        hysteresis over time. A backend that cannot change ignores it."""
        del bps

    @property
    def encoding_bitrate(self) -> int | None:
        """The bit rate the video is encoded at now, when the encoder holds one
        until told otherwise (a phone's rung); None when it follows the target
        as it goes. A session's estimate starts from it."""
        return None

    @property
    def encoding(self) -> str:
        """The video's current encoding in a few words, for logs and the page's
        stats overlay ("" when there is nothing to say)."""
        return ""

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
