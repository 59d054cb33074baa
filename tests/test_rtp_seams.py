"""The worker's seams into aiortc's private parts (worker/rtp_seams.py) still
hold: written for aiortc 1.16.0, each checked by its name and its source, and
each shown to work on a real pair of peer connections, so an aiortc upgrade
that moves one fails here, loudly, before a player notices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, rtcrtpsender
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)
from playcast_testing.peer import Viewer

from playcast.backends.synthetic import SyntheticBackend
from playcast.worker import rtp_seams
from playcast.worker.media import BackendVideoTrack, prefer_h264


def test_every_seam_is_where_it_was() -> None:
    assert rtp_seams.problems() == []


def test_the_check_would_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RTCRtpSender, "_retransmit", lambda self, seq: None)
    monkeypatch.delattr(rtcrtpsender, "RTP_HISTORY_SIZE")
    found = rtp_seams.problems()
    assert any("_retransmit" in p for p in found), found
    assert any("RTP_HISTORY_SIZE" in p for p in found), found


def test_the_history_size_is_process_wide_and_a_power_of_two() -> None:
    before = rtp_seams.history_size()
    try:
        rtp_seams.set_history_size(2048)
        assert rtcrtpsender.RTP_HISTORY_SIZE == 2048  # type: ignore[attr-defined]
        with pytest.raises(ValueError):
            rtp_seams.set_history_size(1000)
    finally:
        rtp_seams.set_history_size(before)


@pytest.fixture
async def sender() -> AsyncIterator[tuple[RTCRtpSender, Viewer, dict[str, Any]]]:
    """A real worker-side sender and a viewer, every seam installed before the offer."""
    backend = SyntheticBackend(width=320, height=568, fps=30)
    await backend.start()
    track = BackendVideoTrack(backend, on_failure=lambda _: None)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    prefer_h264(transceiver)
    s = transceiver.sender
    heard = asyncio.Event()
    seen: dict[str, Any] = {"rtcp": [], "keyframes": 0, "sent": [], "params": None, "heard": heard}

    async def on_rtcp(packet: AnyRtcpPacket, aiortc_handles: rtp_seams.Handles) -> None:
        seen["rtcp"].append(packet)
        heard.set()
        await aiortc_handles()

    def on_started(params: RTCRtpSendParameters) -> None:
        seen["params"] = params

        def wrap(send: rtp_seams.SendRtp) -> rtp_seams.SendRtp:
            async def sending(data: bytes) -> None:
                seen["sent"].append(data)
                await send(data)

            return sending

        rtp_seams.on_send_rtp(s.transport, wrap)

    def on_keyframe() -> None:
        seen["keyframes"] += 1

    rtp_seams.on_rtcp(s, on_rtcp)
    rtp_seams.on_keyframe_request(s, on_keyframe)
    rtp_seams.on_started(s, on_started)
    pc.createDataChannel("input")
    await pc.setLocalDescription(await pc.createOffer())
    viewer = Viewer([])
    answer, _ = await viewer.answer(pc.localDescription.sdp, trickle=False)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    try:
        async with asyncio.timeout(20):
            await viewer.first_frame.wait()
        yield s, viewer, seen
    finally:
        await viewer.close()
        await pc.close()
        await track.aclose()
        await backend.stop()


def video_packets(seen: dict[str, Any], ssrc: int) -> list[bytes]:
    return [d for d in seen["sent"] if len(d) >= 12 and int.from_bytes(d[8:12], "big") == ssrc]


async def test_the_seams_work_on_a_real_sender(
    sender: tuple[RTCRtpSender, Viewer, dict[str, Any]],
) -> None:
    s, _viewer, seen = sender
    media, rtx = rtp_seams.ssrcs(s)
    assert seen["params"] is not None, "on_started ran with the negotiated parameters"
    # Every packet of the peer connection passed the wrapped _send_rtp.
    sent = video_packets(seen, media)
    assert sent, "the video went through the wrapped transport"
    # The viewer's RTCP reaches the handler (its receiver reports, at least).
    async with asyncio.timeout(10):
        await seen["heard"].wait()
    # A PLI reaches on_keyframe_request.
    await s._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=media))
    assert seen["keyframes"] == 1
    # retransmit() sends a packet from the history again, RTX-wrapped.
    seq = int.from_bytes(sent[-1][2:4], "big")
    before = len(seen["sent"])
    await rtp_seams.retransmit(s, seq)
    again = seen["sent"][before:]
    assert [int.from_bytes(d[8:12], "big") for d in again] == [rtx]
    # A NACK goes through the handler (whose test version lets aiortc answer it).
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=media)
    nack.lost = [seq]
    await s._handle_rtcp_packet(nack)
    assert seen["rtcp"][-1] is nack
