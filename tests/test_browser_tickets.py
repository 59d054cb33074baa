"""Join tickets (--join-secret, issue 27) as the player's page handles them, in
headless Chromium against real server and worker processes: a ticket in the
page's address plays and leaves the address bar at once; an expired one gets
its end card; a page embedded in another site's iframe gets its ticket by
postMessage, from its parent and that origin only, and plays."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from browser_support import (
    RECORDER_JS,
    SLOW_WAIT_MS,
    WAIT_MS,
    Players,
    play,
    reason,
    sent_on_socket,
    system,
    wait_state,
)
from playwright.async_api import Frame

from playcast.ticket import mint

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

GAME = "com.supercell.clashroyale"
SECRET = "a-join-secret-for-the-browser-tests-0123456789"


async def test_a_ticket_in_the_address_plays_and_leaves_the_address_bar(
    players: Players,
) -> None:
    async with system(players, join_secret=SECRET) as (server, _):
        token = mint(SECRET, "alice", GAME)
        page = await players.open(f"{server.url}/?ticket={token}&x=1", init_script=RECORDER_JS)
        # Gone from the address at once, before Play; the rest of it kept.
        assert page.url == f"{server.url}/?x=1"
        assert "ticket" not in await page.evaluate("location.href")
        await play(page)
        (join,) = [m for m in await sent_on_socket(page) if m["type"] == "join"]
        assert join["ticket"] == token
        doc = await server.status()
        assert [c["sub"] for c in doc["clients"]] == ["alice"]


async def test_an_expired_ticket_shows_its_card(players: Players) -> None:
    async with system(players, join_secret=SECRET) as (server, _):
        token = mint(SECRET, "bob", GAME, now=time.time() - 3600)
        page = await players.open(f"{server.url}/?ticket={token}")
        await page.click("#play")
        await wait_state(page, "ended")
        assert await reason(page) == "unauthorized"
        card = (await page.inner_text("#status")).lower()
        assert "this link has expired" in card and "get a new one from the site" in card
        # Play again without a new link: refused again (no ticket now), same card.
        await page.click("#again")
        await wait_state(page, "ended")
        assert await reason(page) == "unauthorized"
        doc = await server.status()
        assert [w["status"] for w in doc["workers"]] == ["available"]


def site(server_url: str, site_origin: str, token: str) -> str:
    """The embedding site's page: its iframe names the site's origin, and the
    site answers each request for a ticket with a fresh one (here: ``token``
    once, then nothing)."""
    frame_url = f"{server_url}/?parent_origin={site_origin}"
    return f"""<!doctype html><title>A site</title>
<iframe src="{frame_url}" width="800" height="600" allow="autoplay; fullscreen"></iframe>
<script>
  const tickets = [{json.dumps(token)}];
  window.asked = 0;
  window.addEventListener("message", (ev) => {{
    if (ev.origin !== {json.dumps(server_url)} || ev.data.type !== "playcast:need_ticket") return;
    window.asked += 1;
    const ticket = tickets.shift();
    if (ticket) ev.source.postMessage({{ type: "playcast:ticket", ticket }}, ev.origin);
  }});
</script>"""


async def frame_state(frame: Frame, state: str, timeout: float = WAIT_MS) -> None:
    await frame.wait_for_function(
        "s => document.body.dataset.state === s", arg=state, timeout=timeout
    )


@contextlib.asynccontextmanager
async def site_server(page: Callable[[str], str]) -> AsyncIterator[str]:
    """Another origin on this machine (another port): the embedding site,
    serving ``page(its own origin)`` at /. Chromium lets a loopback page frame
    a loopback one (not one a test route made up: its address is unknown)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page(f"http://127.0.0.1:{port}"), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_embedded_page_gets_its_ticket_from_its_site_and_plays(
    players: Players,
) -> None:
    token = mint(SECRET, "carol", GAME)
    async with (
        system(players, join_secret=SECRET) as (server, _),
        site_server(lambda origin: site(server.url, origin, token)) as site_url,
    ):
        page = await players.open(f"{site_url}/")
        frame = page.frames[1]
        await frame.wait_for_load_state()
        await frame.wait_for_function("window.playcast && window.playcast.tickets", timeout=WAIT_MS)

        # Only the parent, from its origin: a message from anywhere else is not read.
        ignored = await frame.evaluate(
            """t => {
                const send = (origin, source) => window.dispatchEvent(new MessageEvent("message",
                    { data: { type: "playcast:ticket", ticket: t }, origin, source }));
                send("http://evil.example", window.parent);  // another origin
                send(window.playcast.tickets.parentOrigin, window);  // another window
                return window.playcast.tickets.ticket;
            }""",
            "forged",
        )
        assert ignored is None

        await frame.click("#play")
        await frame_state(frame, "connected", timeout=SLOW_WAIT_MS)
        assert await page.evaluate("window.asked") == 1
        doc = await server.status()
        assert [c["sub"] for c in doc["clients"]] == ["carol"]
        # Leave and play again: the page asks its site again; this site has
        # no more tickets, so the server says the link has expired.
        await frame.click("#leave")
        await frame_state(frame, "ended")
        await frame.click("#again")
        await frame_state(frame, "ended", timeout=SLOW_WAIT_MS)
        await frame.wait_for_function(
            "document.body.dataset.reason === 'unauthorized'", timeout=SLOW_WAIT_MS
        )
        assert await page.evaluate("window.asked") == 2
