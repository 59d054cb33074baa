"""The session's codec on the worker: VP8 from the synthetic game end to end, the
offer naming that codec alone, registration naming the backend's codecs, and
a rejected video line reported as a failed negotiation (not an ICE error)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from playcast_testing.peer import Viewer
from playcast_testing.scripted import connect
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import running_worker

from playcast import protocol as t
from playcast.backends.base import H264, VP8
from playcast.backends.synthetic import SyntheticBackend
from playcast.worker.codecs import answer_problem, offer_codec
from playcast.worker.media import BackendVideoTrack, forward_keyframe_requests


def _video_codecs(sdp: str) -> set[str]:
    video = sdp.split("m=video", 1)[1].split("m=", 1)[0]
    return set(re.findall(r"a=rtpmap:\d+ ([\w-]+)/", video))


async def test_vp8_session_decodes_and_shows_a_touch() -> None:
    backend = SyntheticBackend(width=320, height=568, fps=30)
    assert backend.codecs == (H264, VP8)
    await backend.start()
    failures: list[str] = []
    track = BackendVideoTrack(backend, on_failure=failures.append, codec=VP8)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    offer_codec(transceiver, VP8, backend.codecs)
    forward_keyframe_requests(transceiver.sender, backend)
    pc.createDataChannel("input", ordered=True)
    viewer = Viewer([])
    try:
        await pc.setLocalDescription(await pc.createOffer())
        assert _video_codecs(pc.localDescription.sdp) == {"VP8", "rtx"}
        answer, _ = await viewer.answer(pc.localDescription.sdp, trickle=False)
        assert answer_problem(answer, VP8) is None
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await viewer.wait_frame(lambda f: True)
        assert backend.codec == VP8 and backend.keyframes == 1
        await backend.inject_touch("down", 0, 0.3, 0.6)
        await viewer.wait_frame(lambda f: f.shows_mark(0.3, 0.6))
        # A viewer's keyframe request reaches libvpx too.
        receiver = next(x.receiver for x in viewer.pc.getTransceivers() if x.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source
        await receiver._send_rtcp_pli(ssrc)
        # (the decoder does not flag VP8 keyframes: count what libvpx made)
        await viewer.wait_frame(lambda f: backend.keyframes >= 2)
        assert backend.keyframe_requests >= 1
    finally:
        await viewer.close()
        await pc.close()
        await track.aclose()
        await backend.stop()
    assert not failures


async def test_a_codec_the_backend_does_not_send_is_refused() -> None:
    backend = SyntheticBackend(width=320, height=568, codecs=(H264,))
    await backend.start()
    try:
        with pytest.raises(Exception, match="does not send VP8"):
            await anext(aiter(backend.packets(VP8)))
    finally:
        await backend.stop()


ANSWER = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
m=video {port} UDP/TLS/RTP/SAVPF 120\r
a=mid:0\r
a=rtpmap:120 {codec}/90000\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
a=mid:1\r
"""


def test_answer_problem_names_what_is_wrong() -> None:
    assert answer_problem(ANSWER.format(port=9, codec="VP8"), VP8) is None
    rejected = answer_problem(ANSWER.format(port=0, codec="H264"), H264)
    assert rejected is not None and "m=video 0" in rejected and "H264" in rejected
    other = answer_problem(ANSWER.format(port=9, codec="VP9"), VP8)
    assert other is not None and "no VP8" in other
    no_video = answer_problem(ANSWER.split("m=video")[0], VP8)
    assert no_video == "the player's answer has no video line"


@pytest.fixture
async def server() -> AsyncIterator[ServerProcess]:
    async with running_server(heartbeat_interval=0.5, heartbeat_timeout=10) as s:
        yield s


async def test_worker_registers_its_codecs_and_reports_a_rejected_video_line(
    server: ServerProcess,
) -> None:
    async with running_worker(server.ws_base, "--codecs", "vp8,h264"):
        # (a worker is listed from its socket's open, its codecs from its register)
        doc = await server.wait_status(
            lambda d: len(d["workers"]) == 1 and d["workers"][0]["registered"], timeout=60
        )
        assert doc["workers"][0]["codecs"] == ["VP8", "H264"]
        async with connect(server.ws_url("client")) as client:
            await client.send(t.Join(codecs=["H264", "VP8"]))
            assigned = await client.expect(t.Assigned, timeout=30)
            assert assigned.codec == "VP8"  # the worker's preference, not the browser's
            offer = await client.expect(t.Offer, timeout=30)
            assert _video_codecs(offer.sdp) == {"VP8", "rtx"}
            # The browser takes the data channel but not the video.
            viewer = Viewer([])
            try:
                answer, _ = await viewer.answer(offer.sdp, trickle=False)
            finally:
                await viewer.close()
            answer = re.sub(r"^m=video \d+", "m=video 0", answer, flags=re.MULTILINE)
            await client.send(t.Answer(session_id=assigned.session_id, sdp=answer))
            while not isinstance(msg := await client.recv(timeout=30), t.Shutdown):
                pass
            assert msg.reason == "handshake_failed"
            assert msg.detail == "negotiation"
    metrics = await server.metrics()
    failures = [x for x in metrics.splitlines() if x.startswith("playcast_webrtc_failures_total")]
    assert 'playcast_webrtc_failures_total{kind="negotiation",role="worker"} 1.0' in failures
