"""The UDP relay on real sockets, between two plain UDP endpoints standing for
the browser and the worker: it learns each side's address, impairs each way
through its link model, and sees the worker's ICE nomination."""

from __future__ import annotations

import asyncio
import struct
import time

from playcast_testing.netem import Capacity, Impairment, LinkConfig
from playcast_testing.relay import UdpRelay, running_relay

TIMEOUT = 10.0


class Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def next(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.received.get()


async def endpoint(host: str) -> Endpoint:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=(host, 0))
    protocol.transport = transport
    return protocol


def rtp(seq: int, size: int = 1000) -> bytes:
    return struct.pack("!BBH", 0x80, 102, seq) + bytes(size - 4)


def stun(kind: int, tid: bytes, use_candidate: bool) -> bytes:
    attrs = struct.pack("!HH", 0x0025, 0) if use_candidate else b""
    return struct.pack("!HHI", kind, len(attrs), 0x2112A442) + tid + attrs


async def latch(relay: UdpRelay, player: Endpoint, worker: Endpoint) -> None:
    """Let the relay learn both sides (the first datagram of each), the link clean."""
    worker.send(rtp(0), (relay.host, relay.worker_port))  # nowhere to go yet
    await relay.wait_until(lambda: relay.worker_addr is not None)
    player.send(b"\x00\x01", (relay.host, relay.player_port))
    await worker.next()


async def test_it_learns_both_sides_and_forwards_each_way() -> None:
    async with running_relay() as relay:
        player, worker = await endpoint(relay.host), await endpoint(relay.host)
        to_worker = (relay.host, relay.worker_port)
        to_player = (relay.host, relay.player_port)
        # The worker speaks first: the player is not known yet, so it goes nowhere.
        worker.send(rtp(1), to_worker)
        player.send(b"\x00\x01hello", to_player)  # now both are known
        worker.send(rtp(2), to_worker)
        assert await worker.next() == b"\x00\x01hello"
        assert await player.next() == rtp(2)
        assert relay.down.unroutable == 1
        assert [s.kind for s in relay.down.delivered] == ["rtp"]
        assert relay.down.delivered[0].payload_type == 102


async def test_a_nomination_is_seen_only_once_the_player_answers_it() -> None:
    async with running_relay() as relay:
        player, worker = await endpoint(relay.host), await endpoint(relay.host)
        to_worker = (relay.host, relay.worker_port)
        await latch(relay, player, worker)
        worker.send(stun(0x0001, b"w" * 12, True), to_worker)  # the worker nominates
        await player.next()
        assert relay.nominations == []
        player.send(stun(0x0101, b"x" * 12, False), (relay.host, relay.player_port))
        await worker.next()
        assert relay.nominations == [], "a success for another transaction proves nothing"
        player.send(stun(0x0101, b"w" * 12, False), (relay.host, relay.player_port))
        await worker.next()
        worker_addr = worker.transport.get_extra_info("sockname") if worker.transport else None
        assert relay.nominations == [(worker_addr, to_worker)]


async def test_a_cap_paces_a_burst_and_an_outage_stops_everything() -> None:
    async with running_relay() as relay:
        player, worker = await endpoint(relay.host), await endpoint(relay.host)
        await latch(relay, player, worker)
        cap = 400_000  # 50 kB/s: 40 datagrams of 1000 bytes take about 0.8 s
        start = relay.impair(
            Impairment("cap", down=LinkConfig(capacity=Capacity.constant(cap), queue_ms=2000))
        )
        for seq in range(1, 41):
            worker.send(rtp(seq), (relay.host, relay.worker_port))
        got = [await player.next() for _ in range(40)]
        assert got == [rtp(seq) for seq in range(1, 41)], "in order, none lost"
        times = [s.t for s in relay.down.delivered if s.t >= start]
        # Each one leaves when the link has carried the one before it.
        wire = (1000 + 28) * 8 / cap
        assert times[-1] - times[0] >= 39 * wire * 0.95
        # An outage: nothing goes either way while it lasts, then all is as before.
        begin, _ = relay.outage()
        worker.send(rtp(99), (relay.host, relay.worker_port))
        player.send(b"\x00\x01lost", (relay.host, relay.player_port))
        await relay.wait_until(
            lambda: relay.down.link.stats.lost_outage == relay.up.link.stats.lost_outage == 1
        )
        end = relay.restore()
        player.send(b"\x00\x01back", (relay.host, relay.player_port))
        assert await worker.next() == b"\x00\x01back"
        assert not [s for d in (relay.down, relay.up) for s in d.delivered if begin <= s.t < end]
        assert relay.down.link.outages() == [(begin, end)]


async def test_a_packet_whose_delivery_runs_late_into_an_outage_is_lost() -> None:
    # A busy loop runs the delivery timer late: a packet due before the cut but
    # handed on after it would be a byte that crossed a dead link.
    async with running_relay() as relay:
        player, worker = await endpoint(relay.host), await endpoint(relay.host)
        await latch(relay, player, worker)
        relay.impair(Impairment("slow", down=LinkConfig(delay=0.02)))
        offered = len(relay.down.offered)
        worker.send(rtp(7), (relay.host, relay.worker_port))
        await relay.wait_until(lambda: len(relay.down.offered) > offered)
        time.sleep(0.05)  # noqa: ASYNC251 (the loop is held past the packet's due time, on purpose)
        begin, _ = relay.outage()
        delivered = len(relay.down.delivered)
        stats = relay.down.link.stats
        await relay.wait_until(lambda: stats.lost_outage or len(relay.down.delivered) > delivered)
        assert not [s for s in relay.down.delivered if s.t >= begin]
        assert stats.lost_outage == 1
        assert player.received.empty()
