"""The game's sound through the worker's media path: real aiortc on both ends.

The synthetic game clicks at each touch-down; the test player (aiortc)
decodes the Opus track and hears it. The Opus packets must cross unchanged:
what the backend made is what arrives in the RTP payloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from playcast_testing.peer import Viewer

from playcast.backends.audio import CLICK_THRESHOLD, AudioPacket
from playcast.backends.synthetic import SyntheticBackend
from playcast.worker.media import (
    BackendAudioTrack,
    BackendVideoTrack,
    prefer_h264,
    send_game_audio,
)

T = 20.0


class RecordingBackend(SyntheticBackend):
    """Keeps every Opus packet it hands out."""

    def __init__(self) -> None:
        super().__init__(width=320, height=568, fps=30)
        self.made: list[bytes] = []

    async def audio_packets(self) -> AsyncIterator[AudioPacket]:
        async for packet in super().audio_packets():
            self.made.append(packet.data)
            yield packet


Link = tuple[RecordingBackend, RTCPeerConnection, Viewer, list[RtpPacket], str]


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    backend = RecordingBackend()
    await backend.start()
    video = BackendVideoTrack(backend, on_failure=lambda _: None)
    audio = BackendAudioTrack(backend)
    pc = RTCPeerConnection()
    prefer_h264(pc.addTransceiver(video, direction="sendonly"))
    send_game_audio(pc.addTransceiver(audio, direction="sendonly"), audio)
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    viewer = Viewer([])
    answer, _ = await viewer.answer(offer, trickle=False)
    payloads: list[RtpPacket] = []
    for transceiver in viewer.pc.getTransceivers():
        if transceiver.kind == "audio":
            _record_payloads(transceiver.receiver, payloads)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    yield backend, pc, viewer, payloads, offer
    await viewer.close()
    await pc.close()
    await video.aclose()
    await audio.aclose()
    await backend.stop()


def _record_payloads(receiver: RTCRtpReceiver, into: list[RtpPacket]) -> None:
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        into.append(packet)
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


async def test_offer_carries_opus_alone(link: Link) -> None:
    *_, offer = link
    audio = offer.split("m=audio", 1)[1].split("m=", 1)[0]
    rtpmaps = [line for line in audio.splitlines() if line.startswith("a=rtpmap:")]
    assert len(rtpmaps) == 1 and "opus/48000/2" in rtpmaps[0]


async def test_the_player_hears_a_click_after_a_touch_down(link: Link) -> None:
    backend, _, viewer, _, _ = link
    await asyncio.wait_for(viewer.first_sound.wait(), T)
    assert viewer.audio_codec == "audio/opus"
    # The background hum is quiet.
    quiet = await asyncio.wait_for(viewer.wait_sound(lambda f: True), T)
    assert quiet.peak < CLICK_THRESHOLD
    for _ in range(3):
        heard = asyncio.ensure_future(viewer.wait_sound(lambda f: f.peak >= CLICK_THRESHOLD))
        await backend.inject_touch("down", 0, 0.5, 0.5)
        await asyncio.wait_for(heard, T)
        await backend.inject_touch("up", 0, 0.5, 0.5)
    assert backend.clicks == 3
    # A move or a second down of a finger already down is not another click.
    await backend.inject_touch("down", 1, 0.2, 0.2)
    await backend.inject_touch("move", 1, 0.3, 0.3)
    await backend.inject_touch("down", 1, 0.3, 0.3)
    await asyncio.wait_for(viewer.wait_sound(lambda f: f.peak >= CLICK_THRESHOLD), T)
    later = viewer.sound_frames + 5
    await asyncio.wait_for(viewer.wait_sound(lambda f: f.index >= later), T)
    assert backend.clicks == 4


async def test_opus_packets_cross_unchanged(link: Link) -> None:
    backend, _, viewer, payloads, _ = link
    await asyncio.wait_for(viewer.first_sound.wait(), T)
    await backend.inject_touch("down", 0, 0.5, 0.5)
    await asyncio.wait_for(viewer.wait_sound(lambda f: f.peak >= CLICK_THRESHOLD), T)
    made = backend.made
    assert len(payloads) >= 10
    # The payloads received are packets the game made, in order, bytes intact.
    n = len(payloads)
    received = [p.payload for p in payloads]
    assert any(made[i : i + n] == received for i in range(len(made) - n + 1))
    # Each carries its RFC 6464 level: the hum quiet (about -43 dBov), the click loud.
    levels = [p.extensions.audio_level for p in payloads]
    assert all(level is not None for level in levels)
    assert (
        min(level[1] for level in levels if level) < 30 < max(level[1] for level in levels if level)
    )
