"""A test player: the browser's side of Playcast, built on aiortc.

``Viewer`` is the WebRTC half (answer an offer, decode the video, send input
on the ``input`` data channel); ``TestPeer`` adds the signaling half (join,
relay the handshake, answer pings and shutdowns) over the real protocol.
Tests and benchmarks both use it.

aiortc's receiver passes a frame to its decoder only when the first packet of
the next frame arrives, which adds a frame interval a browser does not have.
The viewer swaps in a jitter buffer that releases a frame on its RTP marker
bit, so the latency measured here is the worker's, not aiortc's.

Sound, when the worker sends it, is decoded too (aiortc's Opus decoder) and
each 20 ms frame's peak level kept, so a test can hear the synthetic game's
click after a touch.

With ``PeerOptions(resume=True)`` and a server that offers resume, the player
survives its signaling socket: on a drop (or ``reconnect``) it connects again,
to the next of ``resume_urls``, sends ``resume`` with its token, and carries
on; what it says meanwhile goes out once ``resumed``. The viewer keeps each
frame's arrival time and RTP timestamp, so a test can count the frames that
arrived, and those lost, through the drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp

from playcast import protocol as t

log = logging.getLogger(__name__)

# Luma of a touch mark once decoded; the scene itself stays at or below 200.
MARK_LUMA = 225


class MarkerJitterBuffer(JitterBuffer):
    """Releases a video frame as soon as its last packet (marker bit) is in."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame: JitterFrame | None = super()._remove_frame(sequence_number)
        if frame is not None or self._origin is None:
            return frame
        # Is the oldest frame complete, from the origin through its marker?
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None  # a gap (reordering, loss): wait, as aiortc would
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(
                    data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                    timestamp=packet.timestamp,
                )
        return None


def release_frames_on_marker(receiver: RTCRtpReceiver) -> None:
    receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer(  # type: ignore[attr-defined]
        capacity=512, is_video=True
    )


@dataclass(slots=True)
class HeardFrame:
    """One decoded audio frame (20 ms of Opus)."""

    peak: float  # largest absolute sample, full scale 1.0
    received_at: float  # time.monotonic() when it reached us
    index: int


def audio_peak(frame: av.AudioFrame) -> float:
    samples = frame.to_ndarray()
    if samples.dtype == np.int16:
        return float(np.abs(samples.astype(np.int32)).max()) / 32768.0
    return float(np.abs(samples).max())


@dataclass(slots=True)
class DecodedFrame:
    frame: av.VideoFrame
    received_at: float  # time.monotonic() when the decoded frame reached us
    index: int

    def luma(self, x: float, y: float) -> int:
        """The Y value at normalized picture coordinates (cheap: no conversion)."""
        plane = self.frame.planes[0]
        w, h = self.frame.width, self.frame.height
        px, py = round(x * (w - 1)), round(y * (h - 1))
        row = np.frombuffer(memoryview(plane), np.uint8, count=w, offset=py * plane.line_size)
        return int(row[px])

    def shows_mark(self, x: float, y: float) -> bool:
        return self.luma(x, y) >= MARK_LUMA


class Viewer:
    """The browser's peer connection: answers the worker's offer, plays video."""

    def __init__(self, ice_servers: list[t.IceServer]) -> None:
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in ice_servers
            ]
        )
        self.pc = RTCPeerConnection(config)
        self.channel: RTCDataChannel | None = None
        self.channel_open = asyncio.Event()
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self.first_frame = asyncio.Event()
        self.latest: DecodedFrame | None = None
        self.frames_received = 0
        # (arrival time, RTP timestamp) of recent frames, for gaps and losses.
        self.timeline: deque[tuple[float, int]] = deque(maxlen=20_000)
        self._frame_waiters: list[
            tuple[Callable[[DecodedFrame], bool], asyncio.Future[DecodedFrame]]
        ] = []
        self._reader: asyncio.Task[None] | None = None
        self.first_sound = asyncio.Event()
        self.sound_frames = 0
        self.audio_codec: str | None = None  # e.g. "audio/opus", once negotiated
        self._sound_waiters: list[
            tuple[Callable[[HeardFrame], bool], asyncio.Future[HeardFrame]]
        ] = []
        self._sound_reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            state = self.pc.connectionState
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed"):
                self.failed.set()

        @self.pc.on("datachannel")
        def _on_channel(channel: RTCDataChannel) -> None:
            if channel.label != "input":
                return
            self.channel = channel
            if channel.readyState == "open":
                self.channel_open.set()
            channel.on("open", self.channel_open.set)

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._reader = asyncio.create_task(self._read_frames(track))
            elif track.kind == "audio":
                self._sound_reader = asyncio.create_task(self._read_sound(track))

    async def answer(self, offer_sdp: str, *, trickle: bool) -> tuple[str, list[t.Candidate]]:
        """Our answer SDP and, when trickling like a browser, its candidates apart."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                release_frames_on_marker(transceiver.receiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio" and transceiver._codecs:
                self.audio_codec = transceiver._codecs[0].mimeType.lower()
        sdp = self.pc.localDescription.sdp
        if not trickle:
            return sdp, []
        lines, candidates = [], []
        mid: str | None = None
        mline = -1
        for line in sdp.splitlines():
            if line.startswith("m="):
                mline += 1
                mid = None
            elif line.startswith("a=mid:"):
                mid = line[len("a=mid:") :]
            if line.startswith("a=candidate:"):
                candidates.append(t.Candidate(line[2:], sdp_mid=mid, sdp_mline_index=mline))
                continue
            if line.startswith("a=end-of-candidates"):
                continue
            lines.append(line)
        return "\r\n".join(lines) + "\r\n", candidates

    async def add_candidate(self, candidate: t.Candidate | None) -> None:
        if candidate is None or not candidate.candidate:
            await self.pc.addIceCandidate(None)
            return
        ice = candidate_from_sdp(candidate.candidate.removeprefix("candidate:"))
        ice.sdpMid = candidate.sdp_mid
        ice.sdpMLineIndex = candidate.sdp_mline_index
        await self.pc.addIceCandidate(ice)

    async def _read_frames(self, track: MediaStreamTrack) -> None:
        index = 0
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                decoded = DecodedFrame(frame, time.monotonic(), index)
                index += 1
                self.frames_received = index
                self.timeline.append((decoded.received_at, int(frame.pts or 0)))
                self.latest = decoded
                self.first_frame.set()
                for waiter in list(self._frame_waiters):
                    check, fut = waiter
                    if not fut.done() and check(decoded):
                        fut.set_result(decoded)
                        self._frame_waiters.remove(waiter)

    async def _read_sound(self, track: MediaStreamTrack) -> None:
        index = 0
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                heard = HeardFrame(audio_peak(frame), time.monotonic(), index)
                index += 1
                self.sound_frames = index
                self.first_sound.set()
                for waiter in list(self._sound_waiters):
                    check, fut = waiter
                    if not fut.done() and check(heard):
                        fut.set_result(heard)
                        self._sound_waiters.remove(waiter)

    async def wait_sound(self, check: Callable[[HeardFrame], bool]) -> HeardFrame:
        """The first decoded audio frame from now on that passes ``check``."""
        fut: asyncio.Future[HeardFrame] = asyncio.get_running_loop().create_future()
        entry = (check, fut)
        self._sound_waiters.append(entry)
        try:
            return await fut
        finally:
            if entry in self._sound_waiters:
                self._sound_waiters.remove(entry)

    async def wait_frame(self, check: Callable[[DecodedFrame], bool]) -> DecodedFrame:
        """The first decoded frame from now on that passes ``check``."""
        fut: asyncio.Future[DecodedFrame] = asyncio.get_running_loop().create_future()
        entry = (check, fut)
        self._frame_waiters.append(entry)
        try:
            return await fut
        finally:
            if entry in self._frame_waiters:
                self._frame_waiters.remove(entry)

    def frames_between(self, start: float, end: float) -> int:
        """Frames that arrived within [start, end] (monotonic times)."""
        return sum(1 for at, _ in self.timeline if start <= at <= end)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest wait between frames (or the window's ends) in [start, end]."""
        times = [start, *(at for at, _ in self.timeline if start <= at <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def frames_lost(self, start: float, end: float) -> int:
        """Frames the sender made but that never arrived, within [start, end]:
        counted from gaps in the RTP timestamps (90 kHz) against the usual step."""
        stamps = [pts for at, pts in self.timeline if start <= at <= end]
        steps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
        if not steps:
            return 0
        usual = statistics.median(steps)
        return sum(max(0, round(step / usual) - 1) for step in steps)

    def send_input(self, event: dict[str, Any] | str) -> None:
        if self.channel is None or self.channel.readyState != "open":
            raise RuntimeError("the input data channel is not open")
        self.channel.send(event if isinstance(event, str) else json.dumps(event))

    async def close(self) -> None:
        # One close, shared and shielded: a caller cancelled halfway (the
        # reader task, when the player leaves mid-shutdown) must not leave
        # aiortc's close half done for the next caller to wait on forever.
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self.pc.close()
        for reader in (self._reader, self._sound_reader):
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


HandshakeMode = Literal["normal", "no_answer", "report_failure", "bad_answer"]


@dataclass
class PeerOptions:
    game: str = t.DEFAULT_GAME
    # How to play the handshake: "no_answer" lets it time out, "report_failure"
    # sends webrtc_failed instead of an answer, "bad_answer" sends an SDP the
    # worker cannot apply (the worker is the one to fail).
    handshake: HandshakeMode = "normal"
    trickle: bool = True
    answer_pings: bool = True
    # Forward each input to the server too, as the web page does (it keeps the
    # inactivity clock from running out).
    forward_inputs: bool = True
    # Resume after a dropped socket when the server gave a token; where to
    # reconnect, in turn (base URLs; none: the one joined).
    resume: bool = False
    resume_urls: Sequence[str] = ()


@dataclass
class PeerLog:
    messages: list[t.Message] = field(default_factory=list)
    errors: list[t.Error] = field(default_factory=list)


# Lists that every new TestPeer joins while ``collecting_peers`` is active.
_collectors: list[list[TestPeer]] = []


@contextlib.contextmanager
def collecting_peers() -> Iterator[list[TestPeer]]:
    """Every TestPeer made inside, so a test fixture can check them all afterwards."""
    peers: list[TestPeer] = []
    _collectors.append(peers)
    try:
        yield peers
    finally:
        _collectors.remove(peers)


class TestPeer:
    """One player over the real protocol: ``async with TestPeer.join(url) as p``."""

    __test__ = False  # not a pytest class

    def __init__(self, base_url: str, options: PeerOptions | None = None) -> None:
        for collector in _collectors:
            collector.append(self)
        self.base_url = base_url.rstrip("/")
        self.options = options or PeerOptions()
        self.log = PeerLog()
        self.assigned: t.Assigned | None = None
        self.rejected: t.Rejected | None = None
        self.shutdown: t.Shutdown | None = None
        self.viewer: Viewer | None = None
        self.joined_at = 0.0
        self.socket_closed = asyncio.Event()
        self.assigned_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._pending: asyncio.Queue[t.Answer | t.IceCandidate | t.Offer] = asyncio.Queue()
        self._reported = False
        # Resume: the current token, how each drop went, what waits to be said.
        self.resume_token: str | None = None
        self.resumes = 0
        self.resume_latencies: list[float] = []  # drop -> resumed, seconds
        self.drops: list[tuple[float, float | None]] = []  # (dropped, resumed) monotonic
        self.resume_failed: t.Error | None = None
        self.resumed_event = asyncio.Event()  # set on each resumed; cleared on a drop
        self._away = False
        self._outbox: list[t.Message] = []
        self._leaving = False

    @classmethod
    @contextlib.asynccontextmanager
    async def join(
        cls, base_url: str, options: PeerOptions | None = None
    ) -> AsyncIterator[TestPeer]:
        peer = cls(base_url, options)
        try:
            await peer.start()
            yield peer
        finally:
            await peer.close()

    async def start(self) -> None:
        url = self.base_url.replace("http://", "ws://").replace("https://", "wss://")
        # No kept-alive connections: a resume attempt refused by a stopping
        # node must not pin the next one to it behind a load balancer.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self._ws = await self._http.ws_connect(url + "/ws/client", heartbeat=None, autoping=True)
        self.joined_at = time.monotonic()
        await self.send(t.Join(game=self.options.game))
        self._reader = asyncio.create_task(self._read())

    async def send(self, msg: t.Message) -> None:
        if self._away:
            self._outbox.append(msg)  # said once resumed
            return
        if self._ws is None or self._ws.closed:
            raise ConnectionError("the signaling socket is closed")
        await self._ws.send_str(t.encode_str(msg))

    async def _read(self) -> None:
        try:
            while True:
                await self._read_socket()
                if not await self._resume():
                    return
        finally:
            self.socket_closed.set()

    async def _read_socket(self) -> None:
        """Until this socket closes, or the server says ``reconnect``."""
        ws = self._ws
        assert ws is not None
        async for raw in ws:
            if raw.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = t.decode(raw.data)
            self.log.messages.append(msg)
            if isinstance(msg, t.Reconnect):
                return  # the node is stopping: elsewhere, at once
            await self._handle(msg)

    def _can_resume(self) -> bool:
        return (
            self.options.resume
            and self.resume_token is not None
            and self.shutdown is None
            and not self._leaving
        )

    async def _resume(self) -> bool:
        """The socket is gone: try to resume until the grace is over."""
        if not self._can_resume() or self.assigned is None or self._http is None:
            return False
        dropped = time.monotonic()
        self._away = True
        self.resumed_event.clear()
        self.drops.append((dropped, None))
        old = self._ws
        if old is not None and not old.closed:
            await old.close()
        urls = list(self.options.resume_urls) or [self.base_url]
        until = dropped + (self.assigned.resume_grace or 0.0)
        waits = iter((0.1, 0.25, 0.5))
        attempt = 0
        while time.monotonic() <= until:
            base = urls[attempt % len(urls)].rstrip("/")
            attempt += 1
            outcome = await self._try_resume(_ws_base(base) + "/ws/client")
            if outcome is True:
                resumed = time.monotonic()
                self.resumes += 1
                self.resume_latencies.append(resumed - dropped)
                self.drops[-1] = (dropped, resumed)
                self._away = False
                outbox, self._outbox = self._outbox, []
                for msg in outbox:
                    await self.send(msg)
                self.resumed_event.set()
                return True
            if outcome is False:
                break
            await asyncio.sleep(min(next(waits, 0.5), max(0.0, until - time.monotonic())))
        self._away = False
        return False

    async def _try_resume(self, url: str) -> bool | None:
        """One attempt: True resumed, False refused, None no answer (try again)."""
        assert self._http is not None and self.assigned is not None
        assert self.resume_token is not None
        try:
            async with asyncio.timeout(5.0):
                ws = await self._http.ws_connect(url, heartbeat=None, autoping=True)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        sid = self.assigned.session_id
        try:
            await ws.send_str(t.encode_str(t.Resume(session_id=sid, token=self.resume_token)))
            async for raw in ws:
                if raw.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = t.decode(raw.data)
                self.log.messages.append(msg)
                if isinstance(msg, t.Ping):
                    await ws.send_str(t.encode_str(t.Pong(ts=msg.ts)))
                elif isinstance(msg, t.Resumed):
                    self.resume_token = msg.resume_token
                    self._ws = ws
                    return True
                elif isinstance(msg, t.Error) and msg.code == "resume_failed":
                    self.resume_failed = msg
                    self.log.errors.append(msg)
                    await ws.close()
                    return False
                else:  # e.g. a stopping node's server_shutdown: elsewhere
                    break
        except (aiohttp.ClientError, ConnectionError):
            pass
        await ws.close()
        return None

    async def wait_resumed(self, count: int) -> None:
        """Until this player has resumed ``count`` times in all."""
        while self.resumes < count:
            if self.socket_closed.is_set():
                raise AssertionError(f"gave up resuming: {self.resume_failed!r}")
            await _first(self.resumed_event.wait(), self.socket_closed.wait())

    async def _handle(self, msg: t.Message) -> None:
        match msg:
            case t.Ping(ts=ts):
                if self.options.answer_pings:
                    await self.send(t.Pong(ts=ts))
            case t.Assigned():
                self.assigned = msg
                self.resume_token = msg.resume_token
                self.viewer = Viewer(msg.ice_servers)
                self._watch_viewer(self.viewer, msg.session_id)
                self._handshake = asyncio.create_task(self._run_handshake(msg.session_id))
                self.assigned_event.set()
            case t.Rejected():
                self.rejected = msg
            case t.Offer() | t.IceCandidate():
                self._pending.put_nowait(msg)
            case t.Shutdown():
                self.shutdown = msg
                self.shutdown_event.set()
                if self.viewer is not None:
                    await self.viewer.close()
                await self.send(t.ShutdownAck(ok=True, detail="test peer closed"))
            case t.Error():
                self.log.errors.append(msg)
            case _:
                pass

    def _watch_viewer(self, viewer: Viewer, session_id: str) -> None:
        async def report() -> None:
            await _first(viewer.connected.wait(), viewer.failed.wait())
            if self._reported or self.shutdown is not None:
                return
            self._reported = True
            if viewer.connected.is_set():
                await self.send(t.WebrtcConnected(session_id=session_id))
            else:
                await self.send(
                    t.WebrtcFailed(session_id=session_id, reason="peer connection failed")
                )

        task = asyncio.create_task(report())
        task.add_done_callback(_log_failure)

    async def _run_handshake(self, session_id: str) -> None:
        viewer = self.viewer
        assert viewer is not None
        while True:
            msg = await self._pending.get()
            if isinstance(msg, t.Offer):
                mode = self.options.handshake
                if mode == "no_answer":
                    continue
                if mode == "report_failure":
                    self._reported = True
                    await self.send(
                        t.WebrtcFailed(session_id=session_id, reason="test peer gives up")
                    )
                    continue
                if mode == "bad_answer":
                    await self.send(t.Answer(session_id=session_id, sdp="v=0\r\nnot an sdp\r\n"))
                    continue
                sdp, candidates = await viewer.answer(msg.sdp, trickle=self.options.trickle)
                await self.send(t.Answer(session_id=session_id, sdp=sdp))
                if self.options.trickle:
                    for c in candidates:
                        await self.send(t.IceCandidate(session_id=session_id, candidate=c))
                    await self.send(t.IceCandidate(session_id=session_id, candidate=None))
            elif isinstance(msg, t.IceCandidate):
                with contextlib.suppress(Exception):
                    await viewer.add_candidate(msg.candidate)

    # --- what tests do -------------------------------------------------------

    async def wait_connected(self) -> Viewer:
        """Until video and the input channel are both up."""
        await self.assigned_event.wait()
        viewer = self.viewer
        assert viewer is not None
        await viewer.connected.wait()
        await viewer.channel_open.wait()
        await viewer.first_frame.wait()
        return viewer

    async def input(self, event: dict[str, Any] | str) -> None:
        """Send an input on the data channel, and to the server like a browser."""
        assert self.viewer is not None
        self.viewer.send_input(event)
        if self.options.forward_inputs and isinstance(event, dict):
            await self.send(t.Input(event=event))

    async def touch(self, x: float, y: float, pointer: int = 0) -> float:
        """A tap (down, then up); returns when the down was sent (monotonic)."""
        sent_at = time.monotonic()
        await self.input({"type": "touch", "action": "down", "id": pointer, "x": x, "y": y})
        await self.input({"type": "touch", "action": "up", "id": pointer, "x": x, "y": y})
        return sent_at

    async def wait_mark(self, x: float, y: float) -> DecodedFrame:
        assert self.viewer is not None
        return await self.viewer.wait_frame(lambda f: f.shows_mark(x, y))

    def assert_no_errors(self, *allowed: str) -> None:
        """The server sent this player no ``error``, except codes in ``allowed``."""
        unexpected = [(e.code, e.message) for e in self.log.errors if e.code not in allowed]
        assert not unexpected, f"server errors for {self.assigned or self.base_url}: {unexpected}"

    async def leave(self) -> None:
        self._leaving = True
        await self.send(t.Leave())

    async def drop_socket(self) -> None:
        """Vanish from the server without a word (a closed tab, a lost network)."""
        self._leaving = True  # gone for good: no resume
        if self._ws is not None:
            await self._ws.close()

    async def close(self) -> None:
        self._leaving = True
        for task in (self._handshake, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.viewer is not None:
            await self.viewer.close()
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()


def _ws_base(url: str) -> str:
    return url.replace("http://", "ws://").replace("https://", "wss://")


async def _first(*aws: Any) -> tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]:
    tasks = {asyncio.ensure_future(a) for a in aws}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    return done, pending


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("test peer task failed: %r", task.exception())


__all__ = [
    "MARK_LUMA",
    "DecodedFrame",
    "HeardFrame",
    "MarkerJitterBuffer",
    "PeerOptions",
    "TestPeer",
    "Viewer",
    "collecting_peers",
]
