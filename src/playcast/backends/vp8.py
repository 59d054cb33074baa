"""Low-latency VP8 encoding with PyAV's libvpx, for browsers without H.264.

Firefox decodes H.264 only through the OpenH264 plugin, which can be missing;
every WebRTC browser decodes VP8. Settings are libvpx's real-time ones: no
lag (one frame out for every picture in), no alternate reference frames, the
fastest speed, error resilience (a lost packet spoils one frame, not the
ones after it), and a keyframe whenever the caller asks (a viewer's PLI).

libvpx is rate-controlled from the start; following the player's link
(``retarget``) means a new encoder at the new rate (FFmpeg's libvpx wrapper
does not change the rate of a running one), whose first frame is a keyframe,
so it moves down only once the target is 15 % under its rate, and up only
once it is 30 % over (``RETARGET``).
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import numpy.typing as npt

from playcast.backends.base import VIDEO_CLOCK
from playcast.backends.h264 import EncodedPicture, EncoderSettings, encode_picture

# Average bitrate for the synthetic scene at 720x1280: flat colours, so a
# fraction of this is used; it bounds what a busy picture may spend.
DEFAULT_BITRATE = 2_500_000
RETARGET = (0.85, 1.3)


class Vp8Encoder:
    """Encodes I420 pictures (one ``(h * 3 / 2, w)`` uint8 array each)."""

    def __init__(self, settings: EncoderSettings, bitrate: int = DEFAULT_BITRATE) -> None:
        if settings.width % 2 or settings.height % 2:
            raise ValueError("width and height must be even for 4:2:0 video")
        self.settings = settings
        self.default = bitrate
        self.bitrate = bitrate
        self._wanted = bitrate
        self._ctx = self._open(bitrate)

    def retarget(self, bps: int | None) -> None:
        """Aim at ``bps`` from the next picture on (None: the default rate)."""
        self._wanted = self.default if bps is None else min(bps, self.default)

    def carry_on(self, previous: Vp8Encoder | None) -> None:
        """Take over from ``previous`` (another size or frame rate): its rate."""
        if previous is not None:
            self._wanted = previous._wanted
            self._ctx = self._open(self._wanted)

    @property
    def mode(self) -> str:
        return "VBR"

    def _open(self, bitrate: int) -> av.VideoCodecContext:
        settings = self.settings
        self.bitrate = bitrate
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(VIDEO_CLOCK)
        ctx.framerate = fractions.Fraction(settings.fps, 1)
        ctx.bit_rate = bitrate
        ctx.gop_size = max(1, round(settings.keyframe_interval * settings.fps))
        ctx.qmin = 4
        # Room to go coarse: at a narrow link's rate a finer floor would overshoot it.
        ctx.qmax = 63
        ctx.thread_count = settings.threads
        ctx.options = {
            "deadline": "realtime",
            # 16 is libvpx's fastest real-time speed; quality stays fine for
            # a game's flat shapes and the encode stays near 1-2 ms a frame.
            "cpu-used": "16",
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            "error-resilient": "1",
            # A keyframe may be this % of the per-frame budget: big enough to
            # look right at once, small enough not to stall the link.
            "max-intra-rate": "900",
            "static-thresh": "0",
            "bufsize": str(bitrate // 2),
            "undershoot-pct": "95",
            "overshoot-pct": "15",
        }
        ctx.open()
        return ctx

    def encode(self, i420: npt.NDArray[np.uint8], pts: int, keyframe: bool) -> EncodedPicture:
        low, high = RETARGET
        if not low * self.bitrate <= self._wanted <= high * self.bitrate:
            self._ctx = self._open(self._wanted)
        return encode_picture(self._ctx, i420, pts, keyframe)
