"""A UDP relay on the real media path between a player's browser and a worker,
impairing each direction through a link model (netem.py).

How the media comes through it: the relay has two UDP sockets, one the
player talks to (``player_port``) and one the worker talks to
(``worker_port``). A script installed in the page before the player's own
(``page_script``) rewrites the ICE candidates the signaling carries, both ways:
the worker's offer reaches the page with one candidate, the relay's player
port, and the page's own candidates reach the worker as one, the relay's worker
port. Neither side ever learns the other's address, so every ICE check, the
DTLS handshake, RTP, RTCP and the data channel go through the relay; it learns
each side's address from the datagrams that side sends it (the latest
source wins, as a NAT's binding moves). Nothing in the product changes: the
page runs its own code, and the worker only sees a browser whose candidate
happens to be the relay.

The relay also reads what passes without decrypting it: RFC 7983's first byte
tells STUN, DTLS and RTP/RTCP apart; an RTP header's payload type and size are
in the clear (SRTP encrypts payloads only). And it watches the worker's ICE
nomination (a STUN binding request with USE-CANDIDATE that the browser
answers with a success), which proves the worker's selected pair has the relay
as its remote end.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from aioice.ice import get_host_addresses

from playcast_testing.netem import Impairment, Link, LinkConfig


def default_host() -> str:
    """The machine's first IPv4 address beyond loopback, as aioice gathers them.

    Firefox ignores a remote candidate on loopback (Chromium takes it), and the
    worker's own candidates are never on loopback either: the relay sits where
    a real host would.
    """
    addresses = get_host_addresses(use_ipv4=True, use_ipv6=False)
    return addresses[0] if addresses else "127.0.0.1"


# What a datagram is (RFC 7983 section 7; RTP or RTCP by RFC 5761's payload types).
STUN, DTLS, RTCP, RTP, OTHER = "stun", "dtls", "rtcp", "rtp", "other"
STUN_COOKIE = 0x2112A442
STUN_BINDING_REQUEST = 0x0001
STUN_BINDING_SUCCESS = 0x0101
STUN_USE_CANDIDATE = 0x0025


def classify(data: bytes) -> tuple[str, int]:
    """(kind, RTP payload type or -1); the payload type has 128 added when the
    packet's marker bit is set (for video: the last packet of a frame)."""
    if not data:
        return OTHER, -1
    b = data[0]
    if b <= 3:
        return STUN, -1
    if 20 <= b <= 63:
        return DTLS, -1
    if 128 <= b <= 191 and len(data) >= 2:
        pt = data[1] & 0x7F
        if 64 <= pt <= 95:  # RTCP packet types 192-223 with the marker bit's place
            return RTCP, -1
        return RTP, data[1]
    return OTHER, -1


def stun_header(data: bytes) -> tuple[int, bytes, set[int]] | None:
    """(message type, transaction id, attribute types) of a STUN message, or None."""
    if len(data) < 20:
        return None
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if cookie != STUN_COOKIE or len(data) < 20 + length:
        return None
    attributes: set[int] = set()
    offset = 20
    while offset + 4 <= 20 + length:
        attr, size = struct.unpack_from("!HH", data, offset)
        attributes.add(attr)
        offset += 4 + (size + 3) // 4 * 4
    return kind, bytes(data[8:20]), attributes


@dataclass(frozen=True, slots=True)
class Sample:
    """One datagram at the relay: when (loop time), its payload size, what it was."""

    t: float
    size: int
    kind: str
    pt: int = -1  # RTP payload type, +128 with the marker bit (see ``classify``)

    @property
    def payload_type(self) -> int:
        return self.pt & 0x7F if self.pt >= 0 else -1

    @property
    def marker(self) -> bool:
        return self.pt >= 128


@dataclass
class Direction:
    """One way through the relay: the link model and what went in and came out."""

    name: str
    link: Link
    offered: list[Sample] = field(default_factory=list)
    delivered: list[Sample] = field(default_factory=list)
    unroutable: int = 0  # came before the other side's address was known


class UdpRelay:
    """The relay. ``down`` carries the worker's media to the player, ``up`` the rest."""

    def __init__(
        self, impairment: Impairment | None = None, *, seed: int = 1, host: str | None = None
    ) -> None:
        self.host = host or default_host()
        self.impairment = impairment or Impairment("clean")
        self._seed = seed
        self.player_port = 0
        self.worker_port = 0
        self.player_addr: tuple[str, int] | None = None
        self.worker_addr: tuple[str, int] | None = None
        self.down = Direction("down", Link(self.impairment.down, seed=seed))
        self.up = Direction("up", Link(self.impairment.up, seed=seed + 1))
        # Loop time to wall-clock time (page clocks are epoch-based).
        self.epoch_offset = 0.0
        # The worker's nominating checks that the player answered: (worker's
        # address, the relay address it was sent to).
        self.nominations: list[tuple[tuple[str, int], tuple[str, int]]] = []
        self._pending_nominations: dict[bytes, tuple[str, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._player_side: asyncio.DatagramTransport | None = None
        self._worker_side: asyncio.DatagramTransport | None = None
        self._heap: list[tuple[float, int, Direction, bytes, Sample]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._activity = asyncio.Event()  # set on every datagram in or out

    # --- life ------------------------------------------------------------------

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self.epoch_offset = time.time() - now
        self.down.link.reconfigure(self.impairment.down, now)
        self.up.link.reconfigure(self.impairment.up, now)
        self._player_side, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, player=True), local_addr=(self.host, 0)
        )
        self._worker_side, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, player=False), local_addr=(self.host, 0)
        )
        self.player_port = self._player_side.get_extra_info("sockname")[1]
        self.worker_port = self._worker_side.get_extra_info("sockname")[1]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for side in (self._player_side, self._worker_side):
            if side is not None:
                side.close()

    @property
    def now(self) -> float:
        assert self._loop is not None, "the relay is not started"
        return self._loop.time()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until ``condition()`` holds, checked after each datagram the relay handles."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._activity.clear()
                await self._activity.wait()

    def wall(self, t: float) -> float:
        """Loop time ``t`` as seconds since the epoch (what a page's clock can meet)."""
        return t + self.epoch_offset

    # --- control -----------------------------------------------------------------

    def impair(self, impairment: Impairment) -> float:
        """Both directions follow ``impairment`` from now; its schedules count from now.

        Returns the loop time its second 0 is.
        """
        now = self.now
        self.impairment = impairment
        self.down.link.reconfigure(impairment.down, now)
        self.up.link.reconfigure(impairment.up, now)
        return now

    def set_down(self, config: LinkConfig) -> None:
        self.down.link.reconfigure(config, self.now)

    def outage(self, duration: float = math.inf) -> tuple[float, float]:
        """Nothing passes either way from now for ``duration`` s (or until ``restore``);
        (start, end) in loop time."""
        now = self.now
        for d in (self.down, self.up):
            d.link.outage(now, duration)
        return now, now + duration

    def restore(self) -> float:
        """Any outage under way ends now (loop time returned)."""
        now = self.now
        for d in (self.down, self.up):
            d.link.restore(now)
        return now

    # --- the path ------------------------------------------------------------------

    def _received(self, data: bytes, addr: tuple[str, int], *, player: bool) -> None:
        now = self.now
        if player:
            self.player_addr = addr  # the latest source wins, as a NAT's binding moves
            direction, to = self.up, self.worker_addr
        else:
            self.worker_addr = addr
            direction, to = self.down, self.player_addr
        self._activity.set()
        kind, pt = classify(data)
        if kind == STUN:
            self._watch_nomination(data, addr, player=player)
        sample = Sample(now, len(data), kind, pt)
        direction.offered.append(sample)
        if to is None:
            direction.unroutable += 1
            return
        verdict = direction.link.send(now, len(data))
        if verdict.at is None:
            return
        self._seq += 1
        heapq.heappush(self._heap, (verdict.at, self._seq, direction, data, sample))
        self._arm()

    def _arm(self) -> None:
        if not self._heap or self._loop is None:
            return
        first = self._heap[0][0]
        if self._timer is not None:
            if self._timer.when() <= first:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(first, self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        now = self.now
        while self._heap and self._heap[0][0] <= now:
            at, _, direction, data, sample = heapq.heappop(self._heap)
            if direction.link.cut(at) or direction.link.cut(now):
                # An outage begun (on demand) after this packet was let in; or this
                # timer ran late, into an outage: a packet still on the wire when the
                # link goes down is lost, however busy the loop was.
                direction.link.stats.delivered -= 1
                direction.link.stats.delivered_bytes -= sample.size
                direction.link.stats.lost_outage += 1
                self._activity.set()
                continue
            side, to = (
                (self._player_side, self.player_addr)
                if direction is self.down
                else (self._worker_side, self.worker_addr)
            )
            if side is None or to is None:
                continue
            side.sendto(data, to)
            self._activity.set()
            direction.delivered.append(Sample(now, sample.size, sample.kind, sample.pt))
        self._arm()

    def _watch_nomination(self, data: bytes, addr: tuple[str, int], *, player: bool) -> None:
        header = stun_header(data)
        if header is None:
            return
        kind, tid, attributes = header
        if not player and kind == STUN_BINDING_REQUEST and STUN_USE_CANDIDATE in attributes:
            self._pending_nominations[tid] = addr
        elif player and kind == STUN_BINDING_SUCCESS and tid in self._pending_nominations:
            worker = self._pending_nominations.pop(tid)
            pair = (worker, (self.host, self.worker_port))
            if pair not in self.nominations:
                self.nominations.append(pair)

    # --- the page ---------------------------------------------------------------

    def page_script(self) -> str:
        """The script to install in the player's page before its own (see the module doc)."""
        config = {"host": self.host, "player": self.player_port, "worker": self.worker_port}
        return PAGE_JS.replace("RELAY_CONFIG", json.dumps(config))


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, *, player: bool) -> None:
        self.relay = relay
        self.player = player

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._received(data, addr, player=self.player)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP unreachable from a side that went away: a lost datagram, as on a network


@contextlib.asynccontextmanager
async def running_relay(
    impairment: Impairment | None = None, *, seed: int = 1, host: str | None = None
) -> AsyncIterator[UdpRelay]:
    relay = UdpRelay(impairment, seed=seed, host=host)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


# --- reading the counters ------------------------------------------------------------


def total_bytes(samples: Iterable[Sample], start: float, end: float) -> int:
    return sum(s.size for s in samples if start <= s.t < end)


def frames_sent(samples: Iterable[Sample], payload_type: int, start: float, end: float) -> int:
    """Video frames among ``samples``: packets of ``payload_type`` with the marker bit."""
    return sum(
        1 for s in samples if start <= s.t < end and s.marker and s.payload_type == payload_type
    )


def rate(samples: Iterable[Sample], start: float, end: float) -> float:
    """Mean bit/s of ``samples`` (payload bytes) over [start, end)."""
    return 8 * total_bytes(samples, start, end) / (end - start) if end > start else 0.0


def bins(samples: Iterable[Sample], start: float, end: float, width: float) -> list[int]:
    """Bytes in each ``width``-second bin from ``start`` (whole bins only)."""
    count = int((end - start) / width + 1e-9)
    out = [0] * count
    for s in samples:
        i = int((s.t - start) / width)
        if 0 <= i < count and s.t >= start:
            out[i] += s.size
    return out


def peak_rate(samples: Iterable[Sample], start: float, end: float, window: float) -> float:
    """The highest mean bit/s over any ``window`` seconds within [start, end)
    (windows slid in steps of a tenth of a window)."""
    step = window / 10
    fine = bins(samples, start, end, step)
    per = 10
    if len(fine) < per:
        return rate(samples, start, end)
    run = sum(fine[:per])
    best = run
    for i in range(per, len(fine)):
        run += fine[i] - fine[i - per]
        best = max(best, run)
    return 8 * best / window


# Installed in the page before its own scripts (Playwright's add_init_script,
# or a WebDriver BiDi preload script for Firefox). It wraps RTCPeerConnection's
# prototype, so the page's code runs unchanged.
PAGE_JS = """
(() => {
  const relay = RELAY_CONFIG;
  const seen = { offers: [], local: [], remote: [] };
  window.__relay = seen;
  const P = RTCPeerConnection.prototype;
  const line = (port) => `candidate:1 1 udp 2130706431 ${relay.host} ${port} typ host`;
  // Every m-section's candidates become one: the relay's port for the player.
  const toRelay = (sdp) => {
    const out = [];
    let given = false;
    for (const l of sdp.split('\\r\\n')) {
      if (l.startsWith('m=')) given = false;
      if (l.startsWith('a=candidate:')) {
        if (!given) out.push('a=' + line(relay.player));
        given = true;
        continue;
      }
      out.push(l);
    }
    return out.join('\\r\\n');
  };
  const noCandidates = (sdp) =>
    sdp.split('\\r\\n').filter((l) => !l.startsWith('a=candidate:')).join('\\r\\n');
  const setRemote = P.setRemoteDescription;
  P.setRemoteDescription = function (desc, ...rest) {
    if (desc && desc.sdp) {
      seen.offers.push(desc.sdp);
      desc = { type: desc.type, sdp: toRelay(desc.sdp) };
    }
    return setRemote.call(this, desc, ...rest);
  };
  const addCandidate = P.addIceCandidate;
  P.addIceCandidate = function (c, ...rest) {
    if (c && c.candidate) {
      seen.remote.push(c.candidate);
      const mine = this.__relayRemote || (this.__relayRemote = new Set());
      const key = String(c.sdpMid);
      if (mine.has(key)) return Promise.resolve();
      mine.add(key);
      c = { candidate: line(relay.player), sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
    }
    return addCandidate.call(this, c, ...rest);
  };
  // The page's answer goes out without candidates: they trickle, rewritten below.
  const local = Object.getOwnPropertyDescriptor(P, 'localDescription');
  Object.defineProperty(P, 'localDescription', {
    configurable: true,
    get() {
      const d = local.get.call(this);
      if (!d) return d;
      const sdp = noCandidates(d.sdp);
      return { type: d.type, sdp, toJSON: () => ({ type: d.type, sdp }) };
    },
  });
  // The page's own UDP candidates reach the worker as one: the relay's worker port.
  const relayed = (pc, c) => {
    if (c === null || !c.candidate) return c;
    seen.local.push(c.candidate);
    const f = c.candidate.split(' ');
    if (f.length < 8 || f[2].toLowerCase() !== 'udp') return undefined;
    const sent = pc.__relaySent || (pc.__relaySent = new Set());
    const key = String(c.sdpMid);
    if (sent.has(key)) return undefined;
    sent.add(key);
    f[4] = relay.host;
    f[5] = String(relay.worker);
    f[7] = 'host';
    return { candidate: f.join(' '), sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex,
             usernameFragment: c.usernameFragment, toJSON() { return this; } };
  };
  const wrap = (pc, fn) => (ev) => {
    const c = relayed(pc, ev.candidate);
    if (c === undefined) return undefined;
    return fn.call(pc, { type: 'icecandidate', candidate: c, target: pc });
  };
  const listen = P.addEventListener;
  P.addEventListener = function (type, fn, ...rest) {
    if (type === 'icecandidate' && typeof fn === 'function') fn = wrap(this, fn);
    return listen.call(this, type, fn, ...rest);
  };
  const handler = Object.getOwnPropertyDescriptor(P, 'onicecandidate');
  if (handler) {
    Object.defineProperty(P, 'onicecandidate', {
      configurable: true,
      get() { return handler.get.call(this); },
      set(fn) { handler.set.call(this, typeof fn === 'function' ? wrap(this, fn) : fn); },
    });
  }
})();
"""
