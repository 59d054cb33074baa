"""Every place the worker reaches into aiortc's private parts, and nowhere else.

Written against aiortc 1.16.0 (the lock pins it); the line numbers below are
that version's. aiortc has no public hook for what a sender of pre-encoded
video needs (its RTCP, its retransmissions, its packets on their way out), so
each seam wraps one private method or attribute of one object, rather than
copying aiortc's code. ``problems()`` checks that each is still where and
what it was; ``tests/test_rtp_seams.py`` fails loudly when an aiortc upgrade
moves one.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Final

import aiortc
from aiortc import RTCRtpSender, rtcrtpsender
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import AnyRtcpPacket, HeaderExtensionsMap

AIORTC_VERSION: Final = "1.16.0"

Handles = Callable[[], Awaitable[None]]  # aiortc's own handling of the packet at hand
RtcpHandler = Callable[[AnyRtcpPacket, Handles], Awaitable[None]]
SendRtp = Callable[[bytes], Awaitable[None]]


def set_history_size(packets: int) -> None:
    """Packets each sender keeps for retransmission, process-wide.

    ``rtcrtpsender.py:29`` imports ``RTP_HISTORY_SIZE`` (128) into the
    module, and the sender reads that global at call time: keyed by
    ``seq % RTP_HISTORY_SIZE`` when stored (``:397``) and looked up (``:336``).
    It must divide 65536, or the key would jump at the sequence numbers' wrap.
    """
    if packets <= 0 or 65536 % packets:
        raise ValueError(f"history size must be a power of two up to 65536, not {packets}")
    rtcrtpsender.RTP_HISTORY_SIZE = packets  # type: ignore[attr-defined]


def history_size() -> int:
    size: int = rtcrtpsender.RTP_HISTORY_SIZE  # type: ignore[attr-defined]
    return size


def ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The sender's media and RTX SSRCs (``rtcrtpsender.py:99-100``)."""
    return sender._ssrc, sender._rtx_ssrc


def on_keyframe_request(sender: RTCRtpSender, handler: Callable[[], None]) -> None:
    """Call ``handler`` for each PLI or FIR: ``_handle_rtcp_packet`` calls
    ``_send_keyframe`` (``:277-281``, defined ``:351``), which only flags
    aiortc's own encoder, unused for pre-encoded packets."""
    original: Callable[[], None] = sender._send_keyframe

    def on_request() -> None:
        original()
        handler()

    sender._send_keyframe = on_request  # type: ignore[method-assign]


def on_rtcp(sender: RTCRtpSender, handler: RtcpHandler) -> None:
    """Route every RTCP packet for ``sender`` through ``handler(packet,
    aiortc_handles)``, which decides whether (and when) aiortc's own handling
    runs (``_handle_rtcp_packet``, ``:244``: RTT and loss stats from reports,
    NACKs answered at once ``:274-276``, PLI/FIR ``:277``, REMB ``:282``). It
    runs inside the DTLS transport's receive loop (``rtcdtlstransport.py:602-612``),
    so it must never wait for long."""
    original: Callable[[AnyRtcpPacket], Awaitable[None]] = sender._handle_rtcp_packet

    async def on_packet(packet: AnyRtcpPacket) -> None:
        await handler(packet, lambda: original(packet))

    sender._handle_rtcp_packet = on_packet  # type: ignore[method-assign]


async def retransmit(sender: RTCRtpSender, seq: int) -> None:
    """Send ``seq`` again from the sender's history, RTX-wrapped when
    negotiated (``_retransmit``, ``:332-349``); nothing if it is gone."""
    await sender._retransmit(seq)


def on_started(sender: RTCRtpSender, handler: Callable[[RTCRtpSendParameters], None]) -> None:
    """Call ``handler`` with the negotiated parameters just before the sender
    starts (``send``, public, ``:203``): its transport is then the final,
    bundled one, and no packet has left yet."""
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        handler(parameters)
        await original(parameters)

    sender.send = send  # type: ignore[method-assign]


def on_send_rtp(transport: RTCDtlsTransport, wrap: Callable[[SendRtp], SendRtp]) -> None:
    """Put ``wrap(send)`` in front of one transport's ``_send_rtp``
    (``rtcdtlstransport.py:711``): every RTP and RTCP packet of the peer
    connection, plain, on its way to SRTP and the socket. Senders await it per
    packet (``rtcrtpsender.py:349``, ``:401``, ``:482``)."""
    transport._send_rtp = wrap(transport._send_rtp)  # type: ignore[method-assign,assignment]


def set_header_extensions_map(sender: RTCRtpSender, extensions: HeaderExtensionsMap) -> None:
    """Give ``sender`` (before it starts) its own header extensions map: the
    private ``__rtp_header_extensions_map`` (``rtcrtpsender.py:109``), which
    ``send`` configures and every packet is serialized with."""
    sender._RTCRtpSender__rtp_header_extensions_map = extensions  # type: ignore[attr-defined]


def problems() -> list[str]:
    """What no longer matches aiortc 1.16.0 (empty: every seam holds)."""
    found: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        found.append(f"aiortc is {aiortc.__version__}, the seams were written for {AIORTC_VERSION}")
    if not isinstance(getattr(rtcrtpsender, "RTP_HISTORY_SIZE", None), int):
        found.append("rtcrtpsender.RTP_HISTORY_SIZE is gone")
    expected: dict[object, dict[str, tuple[str, ...]]] = {
        RTCRtpSender: {
            "__init__": ("self._ssrc = ", "self._rtx_ssrc = ", "self.__rtp_header_extensions_map"),
            "_handle_rtcp_packet": (
                "await self._retransmit(seq)",
                "self._send_keyframe()",
                "RTCRemoteInboundRtpStreamStats",
            ),
            "_retransmit": ("RTP_HISTORY_SIZE", "await self.transport._send_rtp("),
            "_run_rtp": (
                "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE]",
                "await self.transport._send_rtp(packet_bytes)",
                "self.__rtp_header_extensions_map",
            ),
            "_send_keyframe": ("self.__force_keyframe = True",),
            "send": ("self.__rtp_header_extensions_map.configure(parameters)",),
        },
        RTCDtlsTransport: {
            "_send_rtp": ("self._tx_srtp.protect(data)",),
            "_handle_rtcp_data": ("await recipient._handle_rtcp_packet(packet)",),
        },
    }
    for cls, methods in expected.items():
        for name, needles in methods.items():
            method = getattr(cls, name, None)
            if method is None:
                found.append(f"{cls.__name__}.{name} is gone")  # type: ignore[attr-defined]
                continue
            source = inspect.getsource(method)
            for needle in needles:
                if needle not in source:
                    found.append(f"{cls.__name__}.{name} no longer has {needle!r}")  # type: ignore[attr-defined]
    return found
