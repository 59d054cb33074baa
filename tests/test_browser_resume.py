"""The page's signaling socket drops mid-game (the server's --resume-grace).

Real server and worker processes; the page reaches the server through a TCP
proxy the test can cut (or a Playwright WebSocket route, to say what a
draining node or a refusing server would). The game's video flows peer to
peer, so a cut socket must not stop it: the page shows "Reconnecting…",
keeps data-state="connected", resumes on a new socket, and plays on. Only a
resume that fails ends it, with the server_lost card.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser_support import (
    RECORDER_JS,
    SLOW_WAIT_MS,
    WAIT_MS,
    Players,
    play,
    reason,
    sent_on_socket,
    system,
)
from playcast_testing.proxy import BlackholeProxy, blackhole_proxy
from playcast_testing.servers import ServerProcess
from playwright.async_api import Page, WebSocketRoute

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# Every change of <body data-state / data-reconnecting>, with its time, from
# the page's first moment: a sign shown for 100 ms is seen as surely as one
# shown for seconds.
WATCH_JS = """
window.__marks = [];
new MutationObserver(() => {
  const d = document.body.dataset;
  const mark = `${d.state}|${d.reconnecting || ''}`;
  const last = window.__marks[window.__marks.length - 1];
  if (!last || last.mark !== mark) window.__marks.push({ t: performance.now(), mark });
}).observe(document, {
  subtree: true, attributes: true, attributeFilter: ['data-state', 'data-reconnecting'],
});
"""

# Counts the frames the page presents (requestVideoFrameCallback).
FRAMES_JS = """
(() => {
  const v = document.querySelector('#stream');
  window.__frames = { count: 0 };
  const tick = () => {
    window.__frames.count += 1;
    v.requestVideoFrameCallback(tick);
  };
  v.requestVideoFrameCallback(tick);
})()
"""


async def frames(page: Page) -> int:
    count: int = await page.evaluate("window.__frames.count")
    return count


async def more_frames(page: Page, n: int = 15) -> None:
    """Wait until the page presents ``n`` more frames."""
    start = await frames(page)
    await page.wait_for_function(
        "target => window.__frames.count >= target", arg=start + n, timeout=WAIT_MS
    )


async def marks_since(page: Page, since: float) -> list[str]:
    marks: list[dict[str, Any]] = await page.evaluate("window.__marks")
    return [m["mark"] for m in marks if m["t"] >= since]


async def now_ms(page: Page) -> float:
    t: float = await page.evaluate("performance.now()")
    return t


async def wait_reconnecting(page: Page, shown: bool) -> None:
    await page.wait_for_function(
        "shown => (document.body.dataset.reconnecting === 'true') === shown",
        arg=shown,
        timeout=SLOW_WAIT_MS,
    )


async def playing_at(url: str, players: Players) -> Page:
    """A page from ``url`` playing, its frames counted."""
    page = await players.open(url, init_script=WATCH_JS + RECORDER_JS)
    await play(page)
    await page.evaluate(FRAMES_JS)
    await more_frames(page, 5)
    return page


@contextlib.asynccontextmanager
async def through_proxy(
    players: Players, grace: float
) -> AsyncIterator[tuple[ServerProcess, BlackholeProxy]]:
    """A server resuming for ``grace`` seconds, one worker, and a proxy in front."""
    async with (
        system(players, resume_grace=grace) as (server, _),
        blackhole_proxy(server.port) as proxy,
    ):
        try:
            yield server, proxy
        except BaseException:
            await players.save_failure()  # before the proxy closes the page's socket
            raise


async def test_cut_socket_resumes_while_the_video_plays_on(players: Players) -> None:
    async with through_proxy(players, 10) as (server, proxy):
        page = await playing_at(f"http://127.0.0.1:{proxy.port}/", players)
        doc = await server.status()
        (session,) = doc["sessions"]
        cut_at = await now_ms(page)

        # The link goes dead and the socket with it: reconnect attempts hang.
        proxy.blackhole()
        proxy.cut()
        await wait_reconnecting(page, True)
        assert await page.is_visible("#reconnecting")
        assert await page.inner_text("#reconnecting") == "Reconnecting…"
        assert await page.get_attribute("#reconnecting", "aria-live") == "polite"
        await server.wait_for_log(r"client_away ")
        # The game goes on while the socket is down.
        await more_frames(page)
        assert await page.evaluate("document.body.dataset.state") == "connected"
        assert await page.evaluate("document.body.dataset.video") == "playing"

        proxy.restore()
        await wait_reconnecting(page, False)
        assert not await page.is_visible("#reconnecting")
        await server.wait_for_log(r"client_resumed ")
        await more_frames(page)

        # Never anything but connected; the sign came and went exactly once.
        # (Frames kept coming while the socket was down: more_frames above.
        # How steady they came is a speed, bench/resume_latency.py's to say.)
        assert await marks_since(page, cut_at) == ["connected|true", "connected|"]
        # The same session, resumed with its token as the new socket's first message.
        sent = await sent_on_socket(page)
        resumes = [m for m in sent if m["type"] == "resume"]
        assert resumes and all(m["session_id"] == session["id"] for m in resumes)
        doc = await server.status()
        assert [s["id"] for s in doc["sessions"]] == [session["id"]]
        assert len(doc["clients"]) == 1

        # A second cut resumes too: the page kept the fresh token `resumed` gave
        # it (the first one is spent; the server would refuse it).
        resumed_before = len(server.lines)
        proxy.cut()
        await server.wait_for_log(r"client_resumed ", after=resumed_before)
        await wait_reconnecting(page, False)
        await more_frames(page)
        assert await reason(page) is None
        tokens = [m["token"] for m in await sent_on_socket(page) if m["type"] == "resume"]
        assert len(set(tokens)) == len(tokens) >= 2

        # The new socket carries the game's business: leave ends the session.
        await page.click("#leave")
        await server.wait_for_log(r"session_ended .*worker_reason=client_left")


async def test_resume_fails_when_the_grace_runs_out(players: Players) -> None:
    async with through_proxy(players, 1) as (server, proxy):
        page = await playing_at(f"http://127.0.0.1:{proxy.port}/", players)
        proxy.blackhole()
        proxy.cut()
        await wait_reconnecting(page, True)
        await page.wait_for_function(
            "document.body.dataset.state === 'ended'", timeout=SLOW_WAIT_MS
        )
        assert await reason(page) == "server_lost"
        assert "connection to the server was lost" in (await page.inner_text("#status")).lower()
        assert not await page.is_visible("#reconnecting")
        # The worker is let go too (the grace, or the page closing its peer, first).
        await server.wait_for_log(r"session_ended .*worker_reason=client_failed")


async def test_resume_fails_when_the_server_is_gone(players: Players) -> None:
    grace = 3.0
    async with system(players, resume_grace=grace) as (server, _):
        page = await playing_at(server.url, players)
        server.proc.kill()
        killed = time.monotonic()
        await wait_reconnecting(page, True)
        await page.wait_for_function(
            "document.body.dataset.state === 'ended'", timeout=SLOW_WAIT_MS
        )
        # It kept trying (each attempt refused at once) for the whole grace.
        assert time.monotonic() - killed >= grace - 0.5
        assert await reason(page) == "server_lost"
        assert not await page.is_visible("#reconnecting")


async def test_refused_token_ends_at_once_with_server_lost(players: Players) -> None:
    """The server answers resume_failed (a spent or foreign token): no more tries."""
    async with through_proxy(players, 30) as (server, proxy):
        page = await players.open(f"http://127.0.0.1:{proxy.port}/", init_script=RECORDER_JS)

        async def spoil(ws: WebSocketRoute) -> None:
            upstream = ws.connect_to_server()
            upstream.on_message(ws.send)

            def outgoing(message: str | bytes) -> None:
                msg = json.loads(message)
                if msg.get("type") == "resume":
                    msg["token"] = "spent" + msg["token"][5:]
                upstream.send(json.dumps(msg))

            ws.on_message(outgoing)

        await page.route_web_socket("**/ws/client", spoil)
        await play(page)
        cut = time.monotonic()
        proxy.cut()
        await page.wait_for_function(
            "document.body.dataset.state === 'ended'", timeout=SLOW_WAIT_MS
        )
        assert time.monotonic() - cut < 15  # the refusal ended it, not the 30 s grace
        assert await reason(page) == "server_lost"
        await server.wait_for_log(r"client_resume_refused ")
        assert len([m for m in await sent_on_socket(page) if m["type"] == "resume"]) == 1


async def test_reconnect_from_a_draining_node_resumes_at_once(players: Players) -> None:
    """``reconnect`` (a node stopping while others live) is said here by a
    WebSocket route in front of a real server: the page resumes on a new
    socket without waiting for the old one to close."""
    async with system(players, resume_grace=30) as (server, _):
        routes: list[WebSocketRoute] = []

        async def keep(ws: WebSocketRoute) -> None:
            routes.append(ws)
            ws.connect_to_server()

        page = await players.open(server.url, init_script=WATCH_JS + RECORDER_JS)
        await page.route_web_socket("**/ws/client", keep)
        await play(page)
        await page.evaluate(FRAMES_JS)
        await more_frames(page, 5)
        since = await now_ms(page)
        routes[0].send(json.dumps({"type": "reconnect"}))
        await server.wait_for_log(r"client_resumed ")
        await wait_reconnecting(page, False)
        await more_frames(page)
        assert len(routes) == 2
        assert await marks_since(page, since) == ["connected|true", "connected|"]
        sent = await sent_on_socket(page)
        assert [m["type"] for m in sent if m["type"] in ("join", "resume")] == ["join", "resume"]
        doc = await server.status()
        assert len(doc["sessions"]) == 1 and len(doc["clients"]) == 1
