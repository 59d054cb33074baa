"""Waiting in line (the server's --queue-limit), as the player sees it.

Real server and worker processes, pages in headless Chromium: the place in
line and the time waited, the Leave button taking a page out of the line,
the line moving up, a queued page getting the machine when it comes free,
and the end cards of a full line and of waiting too long.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from browser_support import (
    RECORDER_JS,
    SLOW_WAIT_MS,
    WAIT_MS,
    Players,
    available,
    play,
    reason,
    sent_on_socket,
    system,
    wait_playing,
    wait_state,
)
from playwright.async_api import Page, WebSocketRoute

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def title(page: Page) -> str:
    return (await page.inner_text("#status-title")).lower()


def in_line(doc: dict[str, Any]) -> dict[int, str]:
    """Client id by place in line, from /api/status."""
    return {c["position"]: c["id"] for c in doc["clients"] if c["position"]}


async def test_queued_page_shows_its_place_leaves_the_line_and_gets_the_machine(
    players: Players,
) -> None:
    async with system(players, queue_limit=3) as (server, _):
        first = await players.open(server.url)
        await play(first)

        second = await players.open(server.url)
        await second.click("#play")
        await wait_state(second, "queued")
        assert await title(second) == "you are number 1 in line"
        # The place is announced (in the live status region); the clock is not.
        live = "document.querySelector('#status-title').closest('[aria-live]')"
        assert await second.evaluate(f"{live}.id + ' ' + {live}.getAttribute('aria-live')") == (
            "status polite"
        )
        assert await second.get_attribute("#queue-waited", "aria-live") == "off"
        assert await second.is_visible("#leave-line")
        assert not await second.is_visible("#play")
        # The time waited ticks.
        shown = await second.inner_text("#queue-waited")
        assert shown.startswith("Waiting for 0:0")
        await second.wait_for_function(
            "t => document.querySelector('#queue-waited').textContent !== t",
            arg=shown,
            timeout=WAIT_MS,
        )

        third = await players.open(server.url)
        await third.click("#play")
        await wait_state(third, "queued")
        assert await title(third) == "you are number 2 in line"
        doc = await server.wait_status(lambda d: len(in_line(d)) == 2)
        second_id = in_line(doc)[1]

        # Leave takes the second page out of the line; the third moves up.
        await second.click("#leave-line")
        await wait_state(second, "ended")
        assert await reason(second) == "left_line"
        assert "you left the line" in await title(second)
        assert not await second.is_visible("#queue-waited")
        doc = await server.wait_status(lambda d: second_id not in {c["id"] for c in d["clients"]})
        assert list(in_line(doc)) == [1]
        await third.wait_for_function(
            "t => document.querySelector('#status-title').textContent === t",
            arg="You are number 1 in line",
            timeout=WAIT_MS,
        )
        assert await first.evaluate("document.body.dataset.state") == "connected"

        # The first player leaves: the machine restarts and goes to the line.
        await first.click("#leave")
        await wait_state(first, "ended")
        await wait_playing(third)
        assert await reason(third) is None
        assert not await third.is_visible("#queue-waited")
        doc = await server.status()
        assert not in_line(doc)
        assert available(doc) == 0


async def test_a_full_line_has_its_own_card(players: Players) -> None:
    # A wait long enough that the line is still full when the next page comes,
    # however slow the machine (the time waited is the next test's).
    async with system(players, queue_limit=1, queue_timeout=300) as (server, _):
        first = await players.open(server.url)
        await play(first)
        second = await players.open(server.url)
        await second.click("#play")
        await wait_state(second, "queued")

        # The line holds one: the next page is turned away as when there is no line.
        third = await players.open(server.url)
        await third.click("#play")
        await wait_state(third, "ended")
        assert await reason(third) == "no_worker_available"
        assert "try again in a minute" in (await third.inner_text("#status")).lower()
        assert await second.evaluate("document.body.dataset.state") == "queued"


async def test_waiting_too_long_has_its_own_card(players: Players) -> None:
    async with system(players, queue_limit=1, queue_timeout=2) as (server, _):
        first = await players.open(server.url)
        await play(first)
        second = await players.open(server.url)
        await second.click("#play")
        await wait_state(second, "ended", timeout=SLOW_WAIT_MS)
        assert await reason(second) == "queue_timeout"
        assert "no game machine came free in time" in await title(second)
        assert await second.is_visible("#again")
        assert not await second.is_visible("#leave-line")


async def test_reconnect_while_in_line_joins_again(players: Players) -> None:
    """A draining cluster node says ``reconnect`` to the pages in its line
    (said here through a WebSocket route in front of a real server): the page
    joins again on a new socket and is back in line."""
    async with system(players, queue_limit=3) as (server, _):
        first = await players.open(server.url)
        await play(first)
        routes: list[WebSocketRoute] = []

        async def keep(ws: WebSocketRoute) -> None:
            routes.append(ws)
            ws.connect_to_server()

        second = await players.open(server.url, init_script=RECORDER_JS)
        await second.route_web_socket("**/ws/client", keep)
        await second.click("#play")
        await wait_state(second, "queued")
        old = in_line(await server.wait_status(lambda d: len(in_line(d)) == 1))[1]

        routes[0].send(json.dumps({"type": "reconnect"}))
        doc = await server.wait_status(lambda d: list(in_line(d)) == [1] and old not in str(d))
        assert len(doc["clients"]) == 2  # the player and the page, back in line
        await wait_state(second, "queued")
        assert await title(second) == "you are number 1 in line"
        assert len(routes) == 2
        joins = [m for m in await sent_on_socket(second) if m["type"] == "join"]
        assert len(joins) == 2
