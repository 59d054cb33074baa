"""The worker's media glue without a server: H.264 only, PLI reaches the backend,
and the test peer's marker-bit jitter buffer."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtpPacket, unpack_header_extensions
from playcast_testing.peer import MarkerJitterBuffer, Viewer

from playcast.backends.synthetic import SyntheticBackend
from playcast.worker.media import (
    PLAYOUT_DELAY_URI,
    BackendVideoTrack,
    PlayoutDelayExtensionsMap,
    forward_keyframe_requests,
    prefer_h264,
    send_playout_delay,
)


class WatchedBackend(SyntheticBackend):
    def __init__(self) -> None:
        super().__init__(width=320, height=568, fps=30)
        self.asked = asyncio.Event()

    def request_keyframe(self) -> None:
        super().request_keyframe()
        self.asked.set()


Link = tuple[WatchedBackend, RTCPeerConnection, Viewer, PlayoutDelayExtensionsMap]
PLAYOUT_DELAY_MS = 100  # not 0: a zero-filled extension must not pass for it


def rtp_extensions(data: bytes) -> dict[int, bytes]:
    """The header extensions of one raw (unencrypted) RTP packet, by id."""
    if not data[0] & 0x10:  # X bit: no extension
        return {}
    start = 12 + 4 * (data[0] & 0x0F)  # after the CSRCs
    profile, words = struct.unpack_from("!HH", data, start)
    value = data[start + 4 : start + 4 + 4 * words]
    return dict(unpack_header_extensions(profile, value))


@pytest.fixture
def sent_rtp(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every RTP packet (not RTCP) an aiortc transport hands to SRTP, as bytes."""
    sent: list[bytes] = []
    original = RTCDtlsTransport._send_rtp

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        if not 192 <= data[1] <= 223:  # RTCP packet types 192-223 share the path
            sent.append(bytes(data))
        await original(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", send_rtp)
    return sent


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    backend = WatchedBackend()
    await backend.start()
    failures: list[str] = []
    track = BackendVideoTrack(backend, on_failure=failures.append)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    prefer_h264(transceiver)
    forward_keyframe_requests(transceiver.sender, backend)
    extensions = send_playout_delay(transceiver.sender, PLAYOUT_DELAY_MS)
    pc.createDataChannel("input", ordered=True)
    await pc.setLocalDescription(await pc.createOffer())
    viewer = Viewer([])
    answer, _ = await viewer.answer(pc.localDescription.sdp, trickle=False)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    yield backend, pc, viewer, extensions
    await viewer.close()
    await pc.close()
    await track.aclose()
    await backend.stop()
    assert not failures


async def test_offer_carries_h264_only(link: Link) -> None:
    _, pc, _, _ = link
    video = pc.localDescription.sdp.split("m=video", 1)[1].split("m=", 1)[0]
    codecs = set(re.findall(r"a=rtpmap:\d+ ([\w-]+)/", video))
    assert codecs == {"H264", "rtx"}


async def test_a_viewers_pli_reaches_the_backend_and_brings_a_keyframe(link: Link) -> None:
    backend, _, viewer, _ = link
    async with asyncio.timeout(30):
        await viewer.first_frame.wait()
        assert not backend.asked.is_set()
        receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source
        later = viewer.frames_received
        await receiver._send_rtcp_pli(ssrc)
        await backend.asked.wait()
        key = await viewer.wait_frame(lambda f: f.frame.key_frame)
    assert key.index > later - 1
    assert backend.keyframe_requests == 1


async def test_playout_delay_rides_on_every_sent_video_packet(
    sent_rtp: list[bytes], link: Link
) -> None:
    _, pc, viewer, extensions = link
    assert PLAYOUT_DELAY_URI in pc.localDescription.sdp
    async with asyncio.timeout(30):
        await viewer.wait_frame(lambda f: f.index >= 2)
    # The viewer (aiortc in this process, so it knows the URI) agreed to it,
    # under the id its answer gave.
    answer = viewer.pc.localDescription.sdp
    m = re.search(rf"a=extmap:(\d+) {re.escape(PLAYOUT_DELAY_URI)}", answer)
    assert m is not None and extensions.id == int(m.group(1))
    video = [p for p in sent_rtp if p[1] & 0x7F != 0 and len(p) > 100]  # media, not padding
    assert len(video) >= 3
    for packet in video:
        sent = rtp_extensions(packet)
        # min = max = 100 ms: two 12-bit fields of 10 ms units.
        assert sent[extensions.id] == bytes([0x00, 0xA0, 0x0A])
        assert len(sent) >= 2  # aiortc's own extensions are still there


def test_playout_delay_value_is_two_12_bit_fields_in_10_ms_units() -> None:
    assert PlayoutDelayExtensionsMap(100).value == bytes([0x00, 0xA0, 0x0A])
    assert PlayoutDelayExtensionsMap(10**6).value == b"\xff\xff\xff"


def _packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]  # what the receiver's depayloader sets
    return p


def test_marker_jitter_buffer_releases_a_frame_on_its_last_packet() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(10, 3000, False, b"a")) == (False, None)
    _, frame = jb.add(_packet(11, 3000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 3000
    # The next frame arrives out of order: released once the gap is filled.
    assert jb.add(_packet(13, 6000, True, b"d"))[1] is None
    _, frame = jb.add(_packet(12, 6000, False, b"c"))
    assert frame is not None and frame.data == b"cd"
    # A frame without a marker (lost last packet) still goes out the old way.
    assert jb.add(_packet(14, 9000, False, b"e"))[1] is None
    _, frame = jb.add(_packet(15, 12000, True, b"f"))
    assert frame is not None and frame.data == b"e"
