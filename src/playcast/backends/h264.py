"""Low-latency H.264 encoding with PyAV's libx264, for backends that draw frames.

The output is what a phone's hardware encoder gives the Android backend: Annex
B access units, baseline profile, no B-frames, SPS/PPS in front of every IDR,
one access unit out for every picture in (zero-latency tuning, so nothing is
held back for lookahead).

The bit rate follows the player's link (``retarget``): at CRF 26 while the
link is wider than what the picture needs, so a flat picture spends little;
once a target is under that, at the target (ABR, with a VBV buffer of
``VBV_SECONDS`` so a keyframe stays a fraction of a second of the link). A
move within ABR changes the running encoder (x264 reconfigures its rate
control without a keyframe); a move between CRF and ABR, or far from the
rate the encoder was opened with, opens a new one, whose first picture is a
keyframe.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from playcast.backends.base import VIDEO_CLOCK


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    width: int
    height: int
    fps: int
    # ultrafast keeps a 720x1280 stream near 1 ms a frame on one core.
    preset: str = "ultrafast"
    crf: int = 26
    # One thread: frames are tiny work and slice threads add latency jitter.
    threads: int = 1
    # Seconds between unrequested keyframes; viewers ask with PLI when they need one.
    keyframe_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class EncodedPicture:
    data: bytes
    keyframe: bool


# The ABR encoder's VBV: its buffer in seconds of the target (what a keyframe
# may take of the link), its ceiling.
VBV_SECONDS = 0.25
VBV_CEILING = 1.5
# Back to CRF once a target is this far over what CRF spent when it was left.
CRF_RETURN = 1.25
# An ABR target this far from the rate the encoder was opened with reopens it
# (its VBV ceiling was set for that rate).
ABR_RANGE = (0.75, 1.3)
# P-frames measured before the CRF rate is trusted.
MEASURE_FRAMES = 10


class RateMeter:
    """The bit rate a stream of P-frames needs (keyframes left out)."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.frames = 0
        self._bytes = 0.0

    def add(self, size: int, keyframe: bool) -> None:
        if keyframe:
            return
        self.frames += 1
        alpha = max(1 / self.frames, 1 / (2 * self.fps))  # about the last 2 s
        self._bytes += alpha * (size - self._bytes)

    @property
    def bps(self) -> float | None:
        return 8 * self._bytes * self.fps if self.frames >= MEASURE_FRAMES else None


class H264Encoder:
    """Encodes I420 pictures (one ``(h * 3 / 2, w)`` uint8 array each)."""

    def __init__(self, settings: EncoderSettings) -> None:
        if settings.width % 2 or settings.height % 2:
            raise ValueError("width and height must be even for 4:2:0 video")
        self.settings = settings
        self.target: int | None = None
        self.abr: int | None = None  # the ABR rate the encoder was opened with; None: CRF
        self.crf_bps: float | None = None  # what CRF spent when it was last left
        self.meter = RateMeter(settings.fps)
        self._ctx = self._open(None)

    def retarget(self, bps: int | None) -> None:
        """Aim at ``bps`` from the next picture on (None: no limit, CRF)."""
        self.target = bps

    def carry_on(self, previous: H264Encoder | None) -> None:
        """Take over from ``previous`` (another size or frame rate): its mode and
        target, so a capped stream does not start over uncapped."""
        if previous is None:
            return
        self.crf_bps = previous.crf_bps
        self.target = previous.target
        if previous.abr is not None and previous.target is not None:
            self._reopen(previous.target)

    @property
    def mode(self) -> str:
        return "CRF" if self.abr is None else "ABR"

    def _follow(self) -> None:
        target = self.target
        if self.abr is None:
            needs = self.meter.bps
            if target is None or needs is None or target >= needs:
                return
            self.crf_bps = needs
            self._reopen(target)
        elif target is None or target > CRF_RETURN * (self.crf_bps or 0.0):
            self._reopen(None)
        elif ABR_RANGE[0] * self.abr <= target <= ABR_RANGE[1] * self.abr:
            self._ctx.bit_rate = target
        else:
            self._reopen(target)

    def _reopen(self, abr: int | None) -> None:
        self._ctx = self._open(abr)
        self.meter = RateMeter(self.settings.fps)

    def _open(self, abr: int | None) -> av.VideoCodecContext:
        settings = self.settings
        self.abr = abr
        keyint = max(1, round(settings.keyframe_interval * settings.fps))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(VIDEO_CLOCK)
        ctx.framerate = fractions.Fraction(settings.fps, 1)
        ctx.profile = "Baseline"
        ctx.thread_count = settings.threads
        if abr is None:
            rate = {"crf": str(settings.crf)}
        else:
            ctx.bit_rate = abr
            # The VBV, set only here: PyAV cannot change it on a running encoder.
            rate = {"maxrate": str(int(VBV_CEILING * abr)), "bufsize": str(int(VBV_SECONDS * abr))}
        ctx.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            **rate,
            "forced-idr": "1",
            "x264-params": (
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:"
                f"repeat-headers=1:threads={settings.threads}"
            ),
        }
        ctx.open()
        return ctx

    def encode(self, i420: npt.NDArray[np.uint8], pts: int, keyframe: bool) -> EncodedPicture:
        self._follow()
        picture = encode_picture(self._ctx, i420, pts, keyframe)
        self.meter.add(len(picture.data), picture.keyframe)
        return picture


def encode_picture(
    ctx: av.VideoCodecContext, i420: npt.NDArray[np.uint8], pts: int, keyframe: bool
) -> EncodedPicture:
    """One picture through an opened encoder set up to hold none back
    (zero-latency x264, libvpx with lag-in-frames 0): anything else is a bug."""
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    frame.pts = pts
    frame.time_base = ctx.time_base
    frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
    packets = ctx.encode(frame)
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise RuntimeError(f"{ctx.name} returned nothing for a picture")
    return EncodedPicture(data=data, keyframe=any(p.is_keyframe for p in packets))
