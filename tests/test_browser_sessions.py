"""How sessions start and end, as the player sees them, with real processes.

Each test drives the page to one ending (busy, idle, a failed machine, a lost
server, leaving) and checks both the page (<body data-state/data-reason> and
the words in #status) and the server's side of the same event.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from browser_support import (
    PHONE,
    RECORDER_JS,
    SLOW_WAIT_MS,
    Players,
    available,
    play,
    reason,
    sent_on_socket,
    system,
    wait_playing,
    wait_state,
)
from playcast_testing import scripted
from playcast_testing.workers import running_worker
from playwright.async_api import Page

from playcast.protocol import Offer, Register, Registered, SessionStart, Shutdown, ShutdownAck

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def status_text(page: Page) -> str:
    return (await page.inner_text("#status")).lower()


async def wait_ended(page: Page, expected: str) -> None:
    await wait_state(page, "ended", timeout=SLOW_WAIT_MS)
    assert await reason(page) == expected
    assert await page.is_visible("#again")


async def test_no_worker_says_try_again_and_play_again_works(players: Players) -> None:
    async with system(players, workers=0) as (server, _):
        page = await players.open(server.url)
        await page.click("#play")
        await wait_ended(page, "no_worker_available")
        assert "try again in a minute" in await status_text(page)

        async with running_worker(server.ws_base):
            await server.wait_status(lambda doc: available(doc) == 1, timeout=60)
            await page.click("#again")
            await wait_playing(page)
            assert await reason(page) is None


async def test_inactivity_warning_tap_keeps_session_then_silence_ends_it(
    players: Players,
) -> None:
    timeout, warning = 6.0, 4.0
    async with system(players, inactivity_timeout=timeout, inactivity_warning=warning) as (
        server,
        _,
    ):
        page = await players.open(server.url, viewport=PHONE, touch=True)
        await play(page)
        await page.wait_for_selector("#warning", state="visible", timeout=SLOW_WAIT_MS)
        assert "still there" in (await page.inner_text("#warning")).lower()
        assert 0 <= int(await page.inner_text("#warning-seconds")) <= warning

        tapped = time.monotonic()
        await page.tap("#warning")
        await page.wait_for_selector("#warning", state="hidden")
        assert await page.evaluate("document.body.dataset.state") == "connected"

        # A new idle spell: warned again, then ended.
        await page.wait_for_selector("#warning", state="visible", timeout=SLOW_WAIT_MS)
        await wait_ended(page, "inactivity_timeout")
        # Without the tap the session would have ended within `warning` seconds of it.
        assert time.monotonic() - tapped >= timeout - 0.5
        assert "idle" in await status_text(page)
        await server.wait_for_log(r"client_shutdown_ack reason=inactivity_timeout ok=True")


async def test_worker_killed_ends_with_worker_failed(players: Players) -> None:
    async with system(players) as (server, (worker,)):
        page = await players.open(server.url)
        await play(page)
        worker.proc.kill()
        await wait_ended(page, "worker_failed")
        assert "game machine failed" in await status_text(page)


async def test_server_killed_ends_with_server_lost(players: Players) -> None:
    async with system(players) as (server, _):
        page = await players.open(server.url)
        await play(page)
        server.proc.kill()
        await wait_ended(page, "server_lost")
        words = await status_text(page)
        assert "connection to the server was lost" in words
        # The page cannot tell the player's network from our crash (issue 25):
        # it blames neither, and still says what to do.
        for blame in ("check your network", "your network", "your connection"):
            assert blame not in words, f"a lost server is blamed on the player: {words!r}"
        assert "press play again" in words


async def test_server_stopping_is_acknowledged(players: Players) -> None:
    async with system(players) as (server, _):
        page = await players.open(server.url)
        await play(page)
        server.send_signal(signal.SIGTERM)
        await wait_ended(page, "server_shutdown")
        await server.wait_for_log(r"client_shutdown_ack reason=server_shutdown ok=True")


async def test_leave_frees_the_worker_which_registers_again(players: Players) -> None:
    async with system(players) as (server, (worker,)):
        page = await players.open(server.url)
        await play(page)
        old_id = await page.evaluate("document.body.dataset.worker")
        mark = len(worker.lines)
        await page.click("#leave")
        await wait_ended(page, "client_left")
        await server.wait_for_log(r"session_ended session=\S+ .*worker_reason=client_left")
        # The same process restarts and registers again, as a new worker.
        _, new_id = await worker.wait_registered(after=mark, timeout=60)
        assert new_id != old_id
        doc = await server.wait_status(
            lambda d: any(w["id"] == new_id and w["status"] == "available" for w in d["workers"]),
            timeout=60,
        )
        assert old_id not in {w["id"] for w in doc["workers"]}


async def test_two_players_get_two_workers_and_a_third_is_rejected(players: Players) -> None:
    async with system(players, workers=2) as (server, _):
        first = await players.open(server.url)
        second = await players.open(server.url, viewport=PHONE, touch=True)
        await asyncio.gather(play(first), play(second))
        ids = {await p.evaluate("document.body.dataset.worker") for p in (first, second)}
        assert len(ids) == 2
        doc = await server.status()
        assert {s["worker_id"] for s in doc["sessions"]} == ids

        third = await players.open(server.url)
        await third.click("#play")
        await wait_ended(third, "no_worker_available")
        for p in (first, second):
            assert await p.evaluate("document.body.dataset.state") == "connected"


async def test_autoplay_and_game_from_the_address(players: Players) -> None:
    async with system(players) as (server, _):
        # A game the server does not serve: rejected, without anyone pressing Play.
        other = await players.open(
            f"{server.url}/?autoplay=1&game=com.example.other", init_script=RECORDER_JS
        )
        await wait_ended(other, "unknown_game")
        joins = [m for m in await sent_on_socket(other) if m["type"] == "join"]
        assert len(joins) == 1 and joins[0]["game"] == "com.example.other"
        assert "H264" in joins[0]["codecs"]

        page = await players.open(f"{server.url}/?autoplay=1")
        await wait_playing(page)


async def test_broken_offer_ends_with_handshake_failed(players: Players) -> None:
    async with (
        system(players, workers=0) as (server, _),
        scripted.connect(server.ws_url("worker")) as worker,
    ):
        await worker.send(Register(game="com.supercell.clashroyale"))
        await worker.expect(Registered)
        page = await players.open(server.url)
        await page.click("#play")
        start = await worker.expect(SessionStart, timeout=30)
        await worker.send(Offer(session_id=start.session_id, sdp="v=0\r\nnot an offer\r\n"))
        await wait_ended(page, "handshake_failed")
        # The page refused the offer: a failed negotiation, not the network's fault.
        text = await status_text(page)
        assert "could not agree on a video format" in text and "wi-fi" not in text
        shutdown = await worker.expect(Shutdown, timeout=30)
        assert shutdown.reason == "handshake_failed" and shutdown.detail == "negotiation"
        await worker.send(ShutdownAck(ok=True, detail="scripted"))
