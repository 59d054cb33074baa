"""Low-latency H.264 encoding with PyAV's libx264, for backends that draw frames.

The output is what a phone's hardware encoder gives the Android backend: Annex
B access units, baseline profile, no B-frames, SPS/PPS in front of every IDR,
one access unit out for every picture in (zero-latency tuning, so nothing is
held back for lookahead).
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


class H264Encoder:
    """Encodes I420 pictures (one ``(h * 3 / 2, w)`` uint8 array each)."""

    def __init__(self, settings: EncoderSettings) -> None:
        if settings.width % 2 or settings.height % 2:
            raise ValueError("width and height must be even for 4:2:0 video")
        self.settings = settings
        keyint = max(1, round(settings.keyframe_interval * settings.fps))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(VIDEO_CLOCK)
        ctx.framerate = fractions.Fraction(settings.fps, 1)
        ctx.profile = "Baseline"
        ctx.thread_count = settings.threads
        ctx.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "crf": str(settings.crf),
            "forced-idr": "1",
            "x264-params": (
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:"
                f"repeat-headers=1:threads={settings.threads}"
            ),
        }
        ctx.open()
        self._ctx = ctx

    def encode(self, i420: npt.NDArray[np.uint8], pts: int, keyframe: bool) -> EncodedPicture:
        return encode_picture(self._ctx, i420, pts, keyframe)


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
