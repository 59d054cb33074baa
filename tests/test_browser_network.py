"""A player on a real network (issue 24): Chromium and a synthetic worker with the
impairment harness's UDP relay on the media path between them.

The session's media really goes through the relay (and nowhere else) and the
relay's impairments really apply. A cap brings the worker's target down to
the link and what it sends stays within 1.5x the link (no storm); an outage
of up to 5 s costs the picture while it lasts, not the session, and the page
says so in plain words at once (and the worker counts it); and a link of
500 kbit/s from the start gets a moving picture.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
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
from playcast_testing.metrics import metric_sum, parse_metrics
from playcast_testing.netem import Capacity, Impairment, LinkConfig
from playcast_testing.page_media import FRAMES_FROM_JS, FRAMES_JS, STATS_JS, Presented
from playcast_testing.relay import UdpRelay, bins, peak_rate, rate, running_relay
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# The second collapsing row: 500 kbit/s with a 100 ms queue.
CAP = 500_000
QUEUE_MS = 100
CAPPED = Impairment.both("cap", LinkConfig(capacity=Capacity.constant(CAP), queue_ms=QUEUE_MS))


@dataclass
class Relayed:
    server: ServerProcess
    worker: WorkerProcess
    relay: UdpRelay
    page: Page

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.page.evaluate(STATS_JS)
        return result

    async def frames(self) -> list[float]:
        result: list[float] = await self.page.evaluate(FRAMES_FROM_JS + "(0)")
        return result

    async def metrics(self) -> dict[str, float]:
        _, m = await self.worker.wait_for_log(r"metrics on (http://\S+)")
        async with aiohttp.ClientSession() as http, http.get(m.group(1)) as response:
            return parse_metrics(await response.text())


@contextlib.asynccontextmanager
async def relayed(players: Players, impairment: Impairment | None = None) -> AsyncIterator[Relayed]:
    """A server, a synthetic worker, and a Chromium player through the relay,
    its link ``impairment`` (default clean) from the start; the page is
    connected (when the link is clean, also playing)."""
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(**FAST_SERVER))
        worker = await stack.enter_async_context(
            running_worker(server.ws_base, "--metrics-port", "0")
        )
        relay = await stack.enter_async_context(running_relay(impairment))
        await worker.wait_registered(timeout=60)
        page = await players.open(server.url, init_script=relay.page_script() + FRAMES_JS)
        try:
            if impairment is None:
                await play(page)
            else:
                await page.click("#play")
                await wait_state(page, "connected", timeout=SLOW_WAIT_MS)
            yield Relayed(server, worker, relay, page)
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
        mark = len(r.worker.lines)
        start = relay.impair(CAPPED)
        first = await r.stats()
        # The worker's target comes down to the link (the browser's REMB)...
        await r.worker.wait_for_log(r"video target .* -> 0\.[0-5]\d Mbit/s", after=mark)
        down = relay.now
        # ...and from then on, over any 5 s, it sends within 1.5x the link: no storm.
        await relay.wait_until(lambda: relay.now - down >= 5.0)
        sent = peak_rate(relay.down.offered, down, relay.now, 5.0)
        assert sent <= 1.5 * CAP, f"the worker sent {sent / 1e6:.2f} Mbit/s into 0.5 Mbit/s"
        last = await r.stats()
        per_second = bins(relay.down.delivered, start, relay.now, 1.0)
        assert per_second and all(8 * b <= CAP for b in per_second), per_second
        got = last["pair"]["bytesReceived"] - first["pair"]["bytesReceived"]
        assert 8 * got / (last["at"] - first["at"]) <= 1.05 * CAP
        assert rate(relay.down.offered, start, down) > CAP, "the worker offered more at first"
        relay.impair(Impairment("clean"))

        # A 4 s outage, as long as it takes the page to go 4 s without a frame.
        mark = len(r.worker.lines)
        begin, _ = relay.outage()
        # The picture stopped while connected: the page says so in plain words,
        # its sign turns poor, and it tells the worker, which logs and counts it.
        await r.page.wait_for_selector("#stalled:not([hidden])", timeout=WAIT_MS)
        body = await r.page.evaluate("({...document.body.dataset})")
        assert (body["picture"], body["quality"], body["state"]) == ("frozen", "poor", "connected")
        notice = await r.page.inner_text("#stalled")
        assert "picture has stopped" in notice and "connection" in notice
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
        # The notice goes as frames return; the worker heard of the stall only
        # then (the channel was cut too), and counted it once.
        await r.page.wait_for_selector("#stalled", state="hidden", timeout=WAIT_MS)
        assert await r.page.evaluate("document.body.dataset.picture") is None
        _, m = await r.worker.wait_for_log(r"picture stopped", after=mark)
        _, m = await r.worker.wait_for_log(r"picture moves again after (\d+) ms", after=mark)
        assert int(m.group(1)) >= 4000  # the page went 4 s without a frame
        metrics = await r.metrics()
        assert metric_sum(metrics, "playcast_worker_picture_stalls_total") == 1
        assert metric_sum(metrics, "playcast_worker_video_target_changes_total", direction="down")
        assert metric_sum(metrics, "playcast_worker_video_target_bps") > 0
        # The stats overlay shows the worker's estimate, the loss and the freezes.
        await r.page.click("#stats-button")
        await r.page.wait_for_function(
            "/Mbit\\/s/.test(document.querySelector('[data-stat=estimate]').textContent)",
            timeout=WAIT_MS,
        )
        freezes = await r.page.inner_text("[data-stat=freezes]")
        assert re.match(r"[1-9]\d* \(\d+\.\d s\)", freezes), freezes
        assert (await r.page.inner_text("[data-stat=loss]")).endswith("%")
        x, y = 0.35, 0.6
        await r.page.mouse.click(*await picture_to_page(r.page, x, y))
        await wait_white(r.page, [(x, y)])
        assert (await r.stats())["state"] == "connected"
        doc = await r.server.status()
        assert len(doc["sessions"]) == 1, "an outage of 4 s must not end the session"


async def test_on_a_narrow_link_the_picture_moves_and_the_worker_keeps_to_it(
    players: Players,
) -> None:
    async with relayed(players, CAPPED) as r:
        relay = r.relay
        start = relay.now
        # A moving picture from the 5th second, sent within 1.5x the link. Without
        # adaptation this link storms: under a frame a second, gaps of 18 s. How
        # many frames a busy machine draws is not the rule here: the issue's
        # 15 frames/s is bench/network.py's (22-28 on a quiet machine).
        await relay.wait_until(lambda: relay.now - start >= 10.0, timeout=30)
        shown = Presented.window(await r.frames(), relay.wall(start + 5.0), relay.wall(relay.now))
        assert shown.fps >= 5, f"{shown.fps:.1f} frames/s"
        assert shown.longest_gap <= 5.0, f"frozen {shown.longest_gap:.1f} s"
        sent = peak_rate(relay.down.offered, start + 5.0, relay.now, 5.0)
        assert sent <= 1.5 * CAP, f"the worker sent {sent / 1e6:.2f} Mbit/s into 0.5 Mbit/s"
        assert (await r.stats())["state"] == "connected"
