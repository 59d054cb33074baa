"""One session's video adapting to the player's link: the asyncio glue between
aiortc's sender (reached only through ``rtp_seams.py``), the pure cores (the
estimate, ``rate_control.py``; the pacer and the retransmission queue,
``pacer.py``; the keyframe requests, ``keyframe_gate.py``) and the backend.

- The player's RTCP comes here first: a REMB or a receiver report moves the
  estimate; a NACK is queued for the pacer (never answered by aiortc, which
  would send every packet it names at once), or answered with a keyframe when
  it asks for more than a keyframe costs (after an outage); a PLI or FIR goes
  through the gate.
- Every packet of the peer connection passes the pacer on its way out: video
  waits for the bucket (so the sender, and through it the game, feel the
  link), the rest is only charged. Each one's abs-send-time is stamped as it
  really leaves, since the browser's REMB reads the link's delay from it.
- Each change of the target is a log line, a metric, the backend's new bit
  rate and a message to the page over the ``input`` channel
  (``{"type": "link", ...}``, see docs/network.md); so is each change of the
  backend's encoding, looked at once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

from aiortc import RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    is_rtcp,
    unpack_remb_fci,
)

from playcast.backends.base import GameBackend, VideoPacket
from playcast.worker import rtp_seams
from playcast.worker.keyframe_gate import KeyframeGate
from playcast.worker.media_counters import MediaCounters
from playcast.worker.pacer import PACKET_BYTES, Pacer
from playcast.worker.rate_control import RateChange, RateController, RateSettings, mbit

log = logging.getLogger("playcast.worker")

ABS_SEND_TIME_URI: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# On the wire beyond the RTP packet: the SRTP tag (10 bytes), IPv4 and UDP (28).
OVERHEAD: Final = 38
# What the encoder is asked for: the target less room for retransmissions.
# The target is the video's: the browser's REMB and its reports count video
# alone (abs-send-time is on video packets only, and Chromium's receive-side
# estimate takes no audio), while the sound's share of the link shows in the
# video's delay and loss. The REMB also never grows past 1.5 times the video
# it receives, so a video held well under the target would hold the REMB,
# and the target, where they are.
VIDEO_SHARE: Final = 0.9
MIN_VIDEO: Final = 50_000
# A keyframe's size before the first one is seen (the arena's at 720x1280).
KEYFRAME_GUESS: Final = 16_000
HISTORY_SECONDS: Final = 2.0
# A NACK for this many packets in a row tells of an outage, not congestion.
OUTAGE_RUN: Final = 30
TICK: Final = 1.0

# Set in the retransmission task only: its packets are charged, never held.
_RESENDING: ContextVar[bool] = ContextVar("resending", default=False)


def history_packets(max_bitrate: int) -> int:
    """Retransmission history for ``HISTORY_SECONDS`` at ``max_bitrate`` (a
    power of two, at least aiortc's 128)."""
    wanted = HISTORY_SECONDS * max_bitrate / 8 / PACKET_BYTES
    return int(min(32768, max(128, 2 ** math.ceil(math.log2(max(wanted, 1))))))


def stamp_abs_send_time(data: bytes, ext_id: int, ntp: int) -> bytes:
    """``data`` (a plain RTP packet) with its abs-send-time extension set to
    ``ntp`` (64-bit NTP time, 6.18 fixed point on the wire); unchanged if it
    has none."""
    if len(data) < 12 or not data[0] & 0x10:
        return data
    start = 12 + 4 * (data[0] & 0x0F)
    if len(data) < start + 4 or data[start : start + 2] != b"\xbe\xde":
        return data  # not the one-byte form aiortc writes
    end = start + 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    i = start + 4
    while i < min(end, len(data)):
        head = data[i]
        if head == 0:  # padding
            i += 1
            continue
        ident, length = head >> 4, (head & 0x0F) + 1
        if ident == 15:
            break
        if ident == ext_id and length == 3:
            value = ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")
            return data[: i + 1] + value + data[i + 4 :]
        i += 1 + length
    return data


class Adaptation:
    """Installed on one session's video sender before the offer (``attach``)."""

    def __init__(
        self,
        backend: GameBackend,
        settings: RateSettings,
        counters: MediaCounters,
        session_id: str = "",
    ) -> None:
        self._clock = asyncio.get_running_loop().time
        now = self._clock()
        self.session_id = session_id
        held = backend.encoding_bitrate  # a phone's rung: start from what it sends
        if held is not None:
            settings = dataclasses.replace(settings, start_bitrate=int(held / VIDEO_SHARE))
        self.controller = RateController(settings, now)
        self.pacer = Pacer(self.controller.target, now, counts=counters.pacer)
        self.gate = KeyframeGate(counters.keyframes)
        self.counters = counters
        self._backend = backend
        self._sender: RTCRtpSender | None = None
        self._video_ssrc = self._rtx_ssrc = -1
        self._abs_id = 0
        self._keyframe_leaving: int | None = None  # a keyframe's size, its first packet not yet out
        self.keyframe_bytes = KEYFRAME_GUESS  # the last keyframe's
        self._nacked = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.encoding = ""
        # Says something to the page (set once the input channel is open).
        self.tell: Callable[[dict[str, Any]], None] | None = None
        counters.target_bps = self.controller.target
        self._follow()

    @property
    def video_bps(self) -> int:
        """The video's share of the target: what the backend is asked for."""
        share = VIDEO_SHARE * self.controller.target / (1 + self.controller.copies)
        return max(MIN_VIDEO, int(share))

    def attach(self, sender: RTCRtpSender) -> None:
        rtp_seams.set_history_size(history_packets(self.controller.settings.max_bitrate))
        self._sender = sender
        self._video_ssrc, self._rtx_ssrc = rtp_seams.ssrcs(sender)
        rtp_seams.on_keyframe_request(sender, self.keyframe_requested)
        rtp_seams.on_rtcp(sender, self._rtcp)
        rtp_seams.on_started(sender, self._started)

    def frame(self, video: VideoPacket) -> None:
        """The sender took ``video`` from the track; its packets leave next."""
        if video.keyframe:
            self._keyframe_leaving = self.keyframe_bytes = len(video.data)

    def keyframe_requested(self) -> None:
        if self.gate.request(self._clock()):
            self._backend.request_keyframe()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # --- the link's news -----------------------------------------------------------

    def _started(self, parameters: RTCRtpSendParameters) -> None:
        for ext in parameters.headerExtensions:
            if ext.uri == ABS_SEND_TIME_URI:
                self._abs_id = ext.id
        assert self._sender is not None
        rtp_seams.on_send_rtp(self._sender.transport, self._paced)
        self._tasks.append(asyncio.create_task(self._resend(), name="retransmissions"))
        self._tasks.append(asyncio.create_task(self._tick(), name="adaptation-tick"))

    async def _rtcp(self, packet: AnyRtcpPacket, aiortc_handles: rtp_seams.Handles) -> None:
        now = self._clock()
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self._nack(now, list(packet.lost))
            return
        await aiortc_handles()  # RTT and loss stats; PLI/FIR reach keyframe_requested
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bps, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._video_ssrc in ssrcs:
                log.debug("session %s: REMB %s", self.session_id, mbit(bps))
                self._apply(self.controller.on_remb(now, bps))
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self._video_ssrc:
                    rtt = await self._rtt()
                    self.pacer.rtt = rtt or self.pacer.rtt
                    copies = self.controller.copies
                    change = self.controller.on_report(
                        now, report.highest_sequence, report.packets_lost, rtt
                    )
                    self._apply(change)
                    if self.controller.copies != copies:
                        self._copies_changed(copies)

    def _nack(self, now: float, lost: list[int]) -> None:
        self.counters.nacks += 1
        if Pacer.longest_run(lost) >= OUTAGE_RUN:
            self.controller.on_outage(now)
        if self.pacer.nack(now, lost, self.keyframe_bytes):
            self.counters.nack_keyframes += 1
            self.keyframe_requested()
        self._nacked.set()

    async def _rtt(self) -> float | None:
        assert self._sender is not None
        for stats in (await self._sender.getStats()).values():
            if stats.type == "remote-inbound-rtp":
                rtt: float | None = stats.roundTripTime
                return rtt
        return None

    def _apply(self, change: RateChange | None) -> None:
        if change is None:
            return
        self.pacer.set_target(change.new, self._clock())
        self.counters.target_bps = change.new
        self.counters.target_changes["down" if change.down else "up"] += 1
        log.info(
            "session %s: video target %s -> %s (%s)",
            self.session_id,
            mbit(change.old),
            mbit(change.new),
            change.reason,
        )
        self._follow()
        self.say()

    def _copies_changed(self, old: int) -> None:
        c = self.controller
        log.info(
            "session %s: %d cop%s of each video packet (was %d; loss %.0f %%)",
            self.session_id,
            c.copies,
            "y" if c.copies == 1 else "ies",
            old,
            100 * c.loss,
        )
        self.counters.copies_changes += 1
        self._follow()
        self.say()

    def _follow(self) -> None:
        try:
            self._backend.set_target_bitrate(self.video_bps)
        except Exception:
            log.exception("the backend's set_target_bitrate raised")

    def say(self) -> None:
        if self.tell is None:
            return
        c = self.controller
        self.tell(
            {
                "type": "link",
                "target_bps": c.target,
                "video_bps": self.video_bps,
                "encoding": self.encoding,
                "rtt_ms": None if c.rtt is None else round(1000 * c.rtt),
                "loss": round(c.loss, 3),
                "copies": c.copies,
            }
        )

    async def _tick(self) -> None:
        """Time-based ladders move, and the backend's encoding is looked at."""
        while True:
            before = self._clock()
            await asyncio.sleep(TICK)
            lag = self._clock() - before - TICK
            if lag > 0.1:
                log.debug("session %s: the loop was %.0f ms late", self.session_id, 1000 * lag)
            log.debug(
                "session %s: waits %d, resent %d, queued %d, backlog %.0f ms",
                self.session_id,
                self.pacer.counts.media_waits,
                self.pacer.counts.retransmitted,
                self.pacer.queued,
                1000 * self.pacer.backlog(self._clock()),
            )
            self._follow()
            encoding = self._backend.encoding
            if encoding != self.encoding:
                if self.encoding:
                    self.counters.encoding_changes += 1
                    log.info("session %s: video encoding now %s", self.session_id, encoding)
                self.encoding = encoding
                self.say()

    # --- what leaves ---------------------------------------------------------------

    def _paced(self, send: rtp_seams.SendRtp) -> rtp_seams.SendRtp:
        async def paced(data: bytes) -> None:
            if is_rtcp(data) or len(data) < 12:
                await send(data)
                return
            ssrc = int.from_bytes(data[8:12], "big")
            if ssrc == self._video_ssrc and not _RESENDING.get():
                await self._wait_bucket()
                seq = int.from_bytes(data[2:4], "big")
                self._leaving(seq)
                await self._send(send, data, video=True)
                await self._copy(seq)
                return
            await self._send(send, data, video=ssrc in (self._video_ssrc, self._rtx_ssrc))

        return paced

    async def _send(self, send: rtp_seams.SendRtp, data: bytes, video: bool) -> None:
        # The target is the video's (see VIDEO_SHARE): sound goes by its own clock.
        if video:
            self.pacer.charge(self._clock(), len(data) + OVERHEAD)
        if self._abs_id:
            data = stamp_abs_send_time(data, self._abs_id, current_ntp_time())
        await send(data)

    async def _copy(self, seq: int) -> None:
        """The copies a lossy link gets of each video packet, right behind it."""
        assert self._sender is not None
        for _ in range(self.controller.copies):
            await self._wait_bucket()
            self.pacer.copied(self._clock(), seq)
            token = _RESENDING.set(True)
            try:
                await rtp_seams.retransmit(self._sender, seq)
            finally:
                _RESENDING.reset(token)

    async def _wait_bucket(self) -> None:
        delay = self.pacer.delay(self._clock())
        if delay <= 0:
            return
        self.pacer.media_waiting += 1
        self.pacer.counts.media_waits += 1
        try:
            while delay > 0:
                await asyncio.sleep(delay)
                delay = self.pacer.delay(self._clock())
        finally:
            self.pacer.media_waiting -= 1

    def _leaving(self, seq: int) -> None:
        size, self._keyframe_leaving = self._keyframe_leaving, None
        if size is not None:
            self.pacer.keyframe_sent(seq)
            rtt = self.controller.rtt or self.pacer.rtt
            self.gate.keyframe_sent(self._clock(), size, self.controller.target, rtt)

    async def _resend(self) -> None:
        _RESENDING.set(True)
        assert self._sender is not None
        while True:
            seq, wait = self.pacer.next_retransmission(self._clock())
            if seq is not None:
                with contextlib.suppress(ConnectionError):
                    await rtp_seams.retransmit(self._sender, seq)
                continue
            self._nacked.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(wait) else wait):
                    await self._nacked.wait()
