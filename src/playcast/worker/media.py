"""The worker's side of the media path: backend packets into aiortc, and back.

The backend already encodes (H.264, or VP8 from the synthetic game), so the
track hands aiortc ``av.Packet`` objects, which its RTP sender packetizes
without decoding or re-encoding. Two things aiortc does not do for such a
track are done here: offer the session's codec only (see codecs.py: the
packets are in that codec whatever the browser would prefer), and pass a viewer's
keyframe requests (RTCP PLI/FIR) on to the backend, since the sender only
remembers them for its own encoder (and, with ``adaptation.py``, the rest of
what following the player's link takes). And one thing aiortc cannot do at all:
send the playout-delay header extension, which lets Chrome show each frame as
soon as it is decoded instead of holding it for smoothing (about 12 ms at p50
from tap to photon, see docs/performance.md).

Sound takes the same road: ``BackendAudioTrack`` hands aiortc the backend's
Opus packets as ``av.Packet`` objects (pts in 1/48000 s), which aiortc's Opus
"encoder" only wraps in RTP (``OpusEncoder.pack``), and the audio transceiver
offers Opus alone. aiortc writes the RFC 6464 audio level only for sound it
encodes itself; ``send_audio_level`` writes the backend's own, when it knows
it (the synthetic game: what lets a benchmark see in the browser when the
click leaves the jitter buffer).

Every touch of aiortc's private parts is in ``rtp_seams.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCRtpParameters, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    pack_header_extensions,
    unpack_header_extensions,
)

from playcast.backends.audio import AUDIO_CLOCK, AudioPacket, GameAudio
from playcast.backends.base import H264, VIDEO_CLOCK, BackendError, GameBackend, VideoPacket
from playcast.worker import rtp_seams
from playcast.worker.adaptation import Adaptation
from playcast.worker.codecs import offer_codec

log = logging.getLogger(__name__)


class BackendVideoTrack(MediaStreamTrack):
    """A video track whose ``recv`` yields the backend's encoded access units."""

    kind = "video"

    def __init__(
        self, backend: GameBackend, on_failure: Callable[[str], None], codec: str = H264
    ) -> None:
        super().__init__()
        self._backend = backend
        self.codec = codec
        self._on_failure = on_failure
        self._packets: AsyncIterator[VideoPacket] | None = None
        self.sent = 0
        # Told of each picture as the sender takes it (the adaptation's keyframe notes).
        self.on_packet: Callable[[VideoPacket], None] | None = None

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._packets is None:
            # Started on the sender's first pull (DTLS is up), so the first
            # keyframe goes straight out instead of waiting in a queue.
            self._packets = aiter(self._backend.packets(self.codec))
        try:
            video = await anext(self._packets)
        except StopAsyncIteration:
            self._fail("the backend's video ended")
            raise MediaStreamError from None
        except BackendError as exc:
            self._fail(f"backend failed: {exc}")
            raise MediaStreamError from None
        except Exception as exc:
            # A bug in a backend: without this, aiortc's sender task would die
            # on it silently and the player would watch a frozen picture.
            log.exception("video track: the backend raised")
            self._fail(f"backend raised {exc!r}")
            raise MediaStreamError from None
        packet = av.Packet(video.data)
        packet.pts = video.pts
        packet.time_base = VIDEO_CLOCK
        self.sent += 1
        if self.on_packet is not None:
            self.on_packet(video)
        return packet

    def _fail(self, reason: str) -> None:
        log.error("video track: %s", reason)
        self.stop()
        self._on_failure(reason)

    async def aclose(self) -> None:
        """Stop pulling from the backend; call once the sender is stopped."""
        self.stop()
        packets, self._packets = self._packets, None
        close = getattr(packets, "aclose", None)
        if close is None:
            return
        try:
            await close()
        except BackendError as exc:
            log.warning("video track: the backend's stream ended with %s", exc)
        except Exception:
            log.exception("video track: closing the backend's stream failed")


class BackendAudioTrack(MediaStreamTrack):
    """An audio track whose ``recv`` yields the backend's Opus packets, untouched.

    When the backend's sound ends, so does the track; the session goes on
    with video only.
    """

    kind = "audio"

    def __init__(self, audio: GameAudio) -> None:
        super().__init__()
        self._audio = audio
        self._packets: AsyncIterator[AudioPacket] | None = None
        self.sent = 0
        # captured_at of the packet last handed to the sender (for benchmarks).
        self.last_captured_at = 0.0
        # Its RFC 6464 level, if the backend knows it (see send_audio_level).
        self.last_level: int | None = None

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._packets is None:
            self._packets = aiter(self._audio.audio_packets())
        try:
            sound = await anext(self._packets)
        except StopAsyncIteration:
            self._end("the backend's sound ended")
            raise MediaStreamError from None
        except BackendError as exc:
            self._end(f"the backend's sound failed: {exc}")
            raise MediaStreamError from None
        packet = av.Packet(sound.data)
        packet.pts = sound.pts
        packet.time_base = AUDIO_CLOCK
        self.sent += 1
        self.last_captured_at = sound.captured_at
        self.last_level = sound.level
        return packet

    def _end(self, reason: str) -> None:
        log.warning("audio track: %s; video goes on", reason)
        self.stop()

    async def aclose(self) -> None:
        """Stop pulling from the backend; call once the sender is stopped."""
        self.stop()
        packets, self._packets = self._packets, None
        close = getattr(packets, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("audio track: closing the backend's sound failed")


def add_video_sender(
    pc: RTCPeerConnection,
    track: BackendVideoTrack,
    backend: GameBackend,
    playout_delay_ms: int | None = None,
    adaptation: Adaptation | None = None,
) -> RTCRtpTransceiver:
    """The one place a session's video sender is made, before the offer: the
    track's codec alone in the offer, the viewer's keyframe requests passed to
    the backend (through the adaptation to the player's link, when given:
    merged, with the pacer and the estimate), and the playout delay (None: not
    sent)."""
    transceiver = pc.addTransceiver(track, direction="sendonly")
    offer_codec(transceiver, track.codec, backend.codecs)
    if adaptation is None:
        forward_keyframe_requests(transceiver.sender, backend)
    else:
        adaptation.attach(transceiver.sender)
        track.on_packet = adaptation.frame
    if playout_delay_ms is not None:
        send_playout_delay(transceiver.sender, playout_delay_ms)
    return transceiver


def add_audio_sender(pc: RTCPeerConnection, track: BackendAudioTrack) -> RTCRtpTransceiver:
    """The one place a session's sound sender is made, before the offer."""
    transceiver = pc.addTransceiver(track, direction="sendonly")
    send_game_audio(transceiver, track)
    return transceiver


def prefer_opus(transceiver: RTCRtpTransceiver) -> None:
    """Offer only Opus, the one codec the backends' sound comes in."""
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == "audio/opus"])


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    """Offer only H.264 (and its RTX), for a backend that sends nothing else."""
    offer_codec(transceiver, H264)


def forward_keyframe_requests(sender: RTCRtpSender, backend: GameBackend) -> None:
    """Make a viewer's PLI/FIR reach ``backend.request_keyframe``.

    Every request, unmerged (``Adaptation`` merges them on a real session).
    """

    def on_keyframe_request() -> None:
        log.debug("viewer asked for a keyframe")
        backend.request_keyframe()

    rtp_seams.on_keyframe_request(sender, on_keyframe_request)


PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
# Free in aiortc's id space, which BUNDLE shares between audio and video.
PLAYOUT_DELAY_ID = 4


def offer_playout_delay() -> None:
    """Make this process's peer connections offer the playout-delay extension.

    aiortc negotiates header extensions against one module-level list, so the
    offer is process-wide; only senders set up by ``send_playout_delay`` use it.
    """
    video = HEADER_EXTENSIONS["video"]
    if not any(x.uri == PLAYOUT_DELAY_URI for x in video):
        video.append(RTCRtpHeaderExtensionParameters(id=PLAYOUT_DELAY_ID, uri=PLAYOUT_DELAY_URI))


class PlayoutDelayExtensionsMap(HeaderExtensionsMap):
    """aiortc's extension map, plus a fixed playout delay on every packet once
    the viewer has agreed to the extension."""

    def __init__(self, delay_ms: int) -> None:
        super().__init__()
        units = min(max(0, delay_ms) // 10, 0xFFF)  # 12 bits each, 10 ms units
        self.value = bytes([units >> 4, ((units & 0xF) << 4) | (units >> 8), units & 0xFF])
        self.id = 0

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        for ext in parameters.headerExtensions:
            if ext.uri == PLAYOUT_DELAY_URI:
                self.id = ext.id

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        profile, packed = super().set(values)
        if not self.id:
            return profile, packed
        extensions = unpack_header_extensions(profile, packed) if packed else []
        extensions.append((self.id, self.value))
        return pack_header_extensions(extensions)


def send_playout_delay(sender: RTCRtpSender, delay_ms: int) -> PlayoutDelayExtensionsMap:
    """Give ``sender`` (before it starts) a map that adds the playout delay."""
    offer_playout_delay()
    extensions = PlayoutDelayExtensionsMap(delay_ms)
    rtp_seams.set_header_extensions_map(sender, extensions)
    return extensions


class AudioLevelExtensionsMap(HeaderExtensionsMap):
    """aiortc's extension map, plus the RFC 6464 level of the packet the track
    last handed the sender (which packs and sends each before asking for the next)."""

    def __init__(self, track: BackendAudioTrack) -> None:
        super().__init__()
        self._track = track

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        level = self._track.last_level
        if values.audio_level is None and level is not None:
            values.audio_level = (False, level)
        return super().set(values)


def send_game_audio(transceiver: RTCRtpTransceiver, track: BackendAudioTrack) -> None:
    """Set up the sound's transceiver before the offer: Opus alone, and the
    backend's audio levels in the RTP header."""
    prefer_opus(transceiver)
    rtp_seams.set_header_extensions_map(transceiver.sender, AudioLevelExtensionsMap(track))
