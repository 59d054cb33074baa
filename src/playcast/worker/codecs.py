"""Which video codec a session sends, and what the player's answer says about it.

The server pairs a browser with a worker that sends a codec the browser
decodes, and tells the worker which (``session_start.codec``, the worker's
first preference the browser named). The worker offers that codec alone, since
its backend encodes exactly one; a browser that still cannot take it answers
with the video line rejected (``m=video 0``), which is a failed negotiation
with a plain reason, not an ICE error.
"""

from __future__ import annotations

import re

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc import RTCSessionDescription as Sdp

from playcast.backends.base import H264


class NegotiationFailed(Exception):
    """The player's answer cannot carry the video: webrtc_failed kind "negotiation"."""


def session_codec(chosen: str | None) -> str:
    """The codec to send: the server's choice (None from an older server: H.264)."""
    return (chosen or H264).upper()


def offer_codec(
    transceiver: RTCRtpTransceiver, codec: str, sendable: tuple[str, ...] | None = None
) -> None:
    """Offer only ``codec`` (every profile aiortc has of it) and its RTX.

    ``sendable``: the backend's codecs, when the choice came from elsewhere.
    """
    if sendable is not None and codec not in sendable:
        raise NegotiationFailed(
            f"the server chose {codec}, which this worker does not send ({', '.join(sendable)})"
        )
    wanted = f"video/{codec}".lower()
    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.mimeType.lower() == wanted]
    if not chosen:
        raise NegotiationFailed(f"aiortc cannot send {codec}")
    transceiver.setCodecPreferences(
        chosen + [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    )


def answer_problem(sdp: str, codec: str) -> str | None:
    """Why the player's answer cannot carry ``codec`` video, or None when it can."""
    video = _media_section(sdp, "video")
    if video is None:
        return "the player's answer has no video line"
    if video.split(maxsplit=2)[1:2] == ["0"]:
        return (
            f"the player's browser rejected the video (m=video 0): it cannot decode {codec}, "
            "the only codec offered"
        )
    named = {m.upper() for m in re.findall(r"^a=rtpmap:\d+ ([\w-]+)/", video, re.MULTILINE)}
    if codec.upper() not in named:
        return f"the player's answer names no {codec} for the video ({', '.join(sorted(named))})"
    return None


async def apply_answer(pc: RTCPeerConnection, sdp: str, codec: str) -> None:
    """Check and apply the player's answer; raise NegotiationFailed when it is unusable."""
    problem = answer_problem(sdp, codec)
    if problem is not None:
        raise NegotiationFailed(problem)
    try:
        await pc.setRemoteDescription(Sdp(sdp, "answer"))
    except Exception as exc:
        raise NegotiationFailed(f"the player's answer was refused: {exc}") from exc


def _media_section(sdp: str, kind: str) -> str | None:
    """The text of the first ``m=<kind>`` section (its m= line first), or None."""
    text = sdp.replace("\r\n", "\n")
    start = re.search(rf"^m={kind} ", text, re.MULTILINE)
    if start is None:
        return None
    rest = text[start.start() :]
    end = re.search(r"^m=", rest[2:], re.MULTILINE)
    return rest if end is None else rest[: end.start() + 2]
