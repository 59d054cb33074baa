"""A player on a real network (issue 24): Chromium and a synthetic worker with the
impairment harness's UDP relay on the media path between them.

What already works is asserted: the session's media really goes through the
relay (and nowhere else), the relay's impairments really apply, and an outage
of up to 5 s costs the picture while it lasts, not the session. What does not
work yet (a narrow link collapses the stream: nothing adapts to it) is written
for the issue's target and expected to fail until the adaptation lands.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from browser_support import (
    FAST_SERVER,
    SLOW_WAIT_MS,
    WAIT_MS,
    Players,
    picture_to_page,
    play,
    wait_state,
    wait_white,
)
from playcast_testing.netem import Capacity, Impairment, LinkConfig
from playcast_testing.page_media import FRAMES_FROM_JS, FRAMES_JS, STATS_JS, Presented
from playcast_testing.relay import UdpRelay, bins, peak_rate, rate, running_relay
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import running_worker
from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# The second collapsing row: 500 kbit/s with a 100 ms queue.
CAP = 500_000
QUEUE_MS = 100
CAPPED = Impairment.both("cap", LinkConfig(capacity=Capacity.constant(CAP), queue_ms=QUEUE_MS))


@dataclass
class Relayed:
    server: ServerProcess
    relay: UdpRelay
    page: Page

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.page.evaluate(STATS_JS)
        return result

    async def frames(self) -> list[float]:
        result: list[float] = await self.page.evaluate(FRAMES_FROM_JS + "(0)")
        return result


@contextlib.asynccontextmanager
async def relayed(players: Players, impairment: Impairment | None = None) -> AsyncIterator[Relayed]:
    """A server, a synthetic worker, and a Chromium player through the relay,
    its link ``impairment`` (default clean) from the start; the page is
    connected (when the link is clean, also playing)."""
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(**FAST_SERVER))
        worker = await stack.enter_async_context(running_worker(server.ws_base))
        relay = await stack.enter_async_context(running_relay(impairment))
        await worker.wait_registered(timeout=60)
        page = await players.open(server.url, init_script=relay.page_script() + FRAMES_JS)
        try:
            if impairment is None:
                await play(page)
            else:
                await page.click("#play")
                await wait_state(page, "connected", timeout=SLOW_WAIT_MS)
            yield Relayed(server, relay, page)
        except BaseException:
            await players.save_failure()
            raise


async def test_the_media_goes_through_the_relay_which_caps_it_and_cuts_it(
    players: Players,
) -> None:
    async with relayed(players) as r:
        relay = r.relay
        # The worker nominated a pair whose remote end is the relay, the browser
        # selected one whose remote end is the relay, and every byte the page got
        # is a byte the relay delivered to it.
        assert relay.nominations
        assert {remote for _, remote in relay.nominations} == {(relay.host, relay.worker_port)}
        before = sum(s.size for s in relay.down.delivered)
        stats = await r.stats()
        after = sum(s.size for s in relay.down.delivered)
        assert stats["remote"] == {"address": relay.host, "port": relay.player_port}
        assert 0.8 * before <= stats["pair"]["bytesReceived"] <= after

        # A cap under the stream's own rate: never more than it reaches the page.
        start = relay.impair(CAPPED)
        first = await r.stats()
        await relay.wait_until(lambda: relay.now - start >= 3.0)
        last = await r.stats()
        per_second = bins(relay.down.delivered, start, relay.now, 1.0)
        assert per_second and all(8 * b <= CAP for b in per_second), per_second
        got = last["pair"]["bytesReceived"] - first["pair"]["bytesReceived"]
        assert 8 * got / (last["at"] - first["at"]) <= 1.05 * CAP
        assert rate(relay.down.offered, start, relay.now) > CAP, "the worker offered more"
        relay.impair(Impairment("clean"))

        # A 4 s outage, as long as it takes the page to go 4 s without a frame.
        begin, _ = relay.outage()
        await r.page.wait_for_function(
            "Date.now() - window.__frames.at[window.__frames.at.length - 1] > 4000",
            timeout=WAIT_MS,
            polling=100,
        )
        end = relay.restore()
        # Nothing passed it either way, and the page showed nothing new during it.
        assert not [s for d in (relay.down, relay.up) for s in d.delivered if begin <= s.t < end]
        assert relay.down.link.stats.lost_outage > 0 and relay.up.link.stats.lost_outage > 0
        shown = Presented.window(await r.frames(), relay.wall(begin) + 0.25, relay.wall(end))
        assert shown.frames == ()

        # The picture comes back once the link does, and answers a tap again.
        await r.page.wait_for_function(
            "t => window.__frames.at.filter(f => f > t).length >= 10",
            arg=1000 * relay.wall(end),
            timeout=WAIT_MS,
        )
        x, y = 0.35, 0.6
        await r.page.mouse.click(*await picture_to_page(r.page, x, y))
        await wait_white(r.page, [(x, y)])
        assert (await r.stats())["state"] == "connected"
        doc = await r.server.status()
        assert len(doc["sessions"]) == 1, "an outage of 4 s must not end the session"


@pytest.mark.xfail(
    strict=True,
    reason="issue 24: nothing adapts to the player's link yet; on a 500 kbit/s link the"
    " worker pushes over 10x the link and the page gets about a frame a second."
    " Flips when the adaptation lands.",
)
async def test_on_a_narrow_link_the_picture_moves_and_the_worker_keeps_to_it(
    players: Players,
) -> None:
    async with relayed(players, CAPPED) as r:
        relay = r.relay
        start = relay.now
        # The target: a moving picture within 5 s, sent within 1.5x the link.
        await relay.wait_until(lambda: relay.now - start >= 10.0, timeout=30)
        shown = Presented.window(await r.frames(), relay.wall(start + 5.0), relay.wall(relay.now))
        assert shown.fps >= 15, f"{shown.fps:.1f} frames/s"
        assert shown.longest_gap <= 1.0, f"frozen {shown.longest_gap:.1f} s"
        sent = peak_rate(relay.down.offered, start + 5.0, relay.now, 5.0)
        assert sent <= 1.5 * CAP, f"the worker sent {sent / 1e6:.2f} Mbit/s into 0.5 Mbit/s"
        assert (await r.stats())["state"] == "connected"
