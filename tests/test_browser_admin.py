"""The operator page (/admin, issue 26) in headless Chromium, on real
processes: the server, the farm and its workers, phones faked behind one
fake adb server, players over the real protocol (aiortc).

A phone unplugged shows as offline within 2 s; a farm that stops answering
shows as unreachable, with the age of its last answer; "drain" on a busy
worker lets its session play to the end, then keeps it out of the pool
(registered again, held, never given a player) until "undrain"; "restart"
ends its session (worker_failed) and it comes back; without the token the
API answers 403 and the page says so. Every wait is for the page's DOM (or
a process's log) to change, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from browser_support import WAIT_MS, Players
from farmkit import PHONE, SERVER, TIMEOUT, FarmRig, make_jar, worker_flags
from playcast_testing.fake_farm import FakeAdbServer
from playcast_testing.farms import running_farm
from playcast_testing.peer import TestPeer
from playcast_testing.scripted import connect
from playcast_testing.servers import running_server
from playcast_testing.workers import free_port
from playwright.async_api import Page

from playcast.protocol import Join, Rejected

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "op-secret-26"
# The bound from unplug to the page showing it (an env variable
# widens it on a machine too loaded to say anything about speed).
OFFLINE_MS = float(os.environ.get("PLAYCAST_ADMIN_OFFLINE_MS", "2000"))


@contextlib.asynccontextmanager
async def farm_and_server(tmp_path: Path, serials: Sequence[str]) -> AsyncIterator[FarmRig]:
    """Phones plugged in, a server that knows the farm (--farm) and the
    token, the farm on a port chosen ahead (the server is told it first)."""
    jar = make_jar(tmp_path)
    port = free_port()
    async with FakeAdbServer() as adb:
        phones = {s: await adb.add_phone(s, **PHONE) for s in serials}
        async with (
            running_server(
                "--farm", f"http://127.0.0.1:{port}", **SERVER, status_token=TOKEN
            ) as server,
            running_farm(
                adb, server.ws_base, "--metrics-port", str(port), worker_flags=worker_flags(jar)
            ) as farm,
        ):
            yield FarmRig(server, farm, adb, phones)


async def open_admin(players: Players, url: str) -> Page:
    page = await players.open(f"{url}/admin?token={TOKEN}")
    await page.wait_for_function("document.body.dataset.auth === 'ok'", timeout=WAIT_MS)
    return page


def worker_row(name: str, **data: str) -> str:
    extra = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return f'#workers tr[data-name="{name}"]{extra}'


async def test_an_unplugged_phone_shows_offline_within_two_seconds_and_a_silent_farm_as_such(
    players: Players, tmp_path: Path
) -> None:
    async with farm_and_server(tmp_path, ["phone-1", "phone-2"]) as rig:
        await rig.wait_states({"phone-1": "available", "phone-2": "available"})
        page = await open_admin(players, rig.server.url)
        # The token left the address bar (and the history) for the tab's storage.
        assert page.url == f"{rig.server.url}/admin"
        assert await page.evaluate("sessionStorage.getItem('playcast-admin-token')") == TOKEN
        for serial in ("phone-1", "phone-2"):
            cell = f'{worker_row(serial, status="available")} td[data-phone-state="available"]'
            await page.wait_for_selector(cell, timeout=WAIT_MS)
        assert await page.inner_text('#farms tr[data-reachable="true"]')

        unplugged = time.monotonic()
        rig.adb.unplug("phone-1")
        await page.wait_for_selector(
            '[data-serial="phone-1"][data-phone-state="offline"]', timeout=OFFLINE_MS
        )
        shown = time.monotonic() - unplugged
        print(f"unplug -> offline on the page: {shown * 1000:.0f} ms")
        assert shown <= OFFLINE_MS / 1000, shown
        # The other phone and its worker are untouched.
        await page.wait_for_selector(
            f'{worker_row("phone-2", status="available")} td[data-phone-state="available"]',
            timeout=WAIT_MS,
        )

        # The farm stops answering: unreachable, with the age of its last answer.
        os.kill(rig.farm.proc.pid, signal.SIGSTOP)
        try:
            row = '#farms tr[data-reachable="false"]'
            await page.wait_for_selector(row, timeout=WAIT_MS)
            assert "last answer" in await page.inner_text(row)
            await page.wait_for_selector(
                '[data-serial="phone-2"][data-phone-state="available"]', timeout=WAIT_MS
            )  # its phones as it last said
        finally:
            os.kill(rig.farm.proc.pid, signal.SIGCONT)
        await page.wait_for_selector('#farms tr[data-reachable="true"]', timeout=WAIT_MS)


@pytest.mark.timeout(300)  # a farm, two sessions and two restarts on a loaded machine
async def test_drain_on_a_busy_worker_waits_for_its_session_then_holds_it_until_undrained(
    players: Players, tmp_path: Path
) -> None:
    async with farm_and_server(tmp_path, ["phone-1"]) as rig:
        await rig.wait_states({"phone-1": "available"})
        page = await open_admin(players, rig.server.url)
        async with TestPeer.join(rig.server.url) as player:
            viewer = await asyncio.wait_for(player.wait_connected(), TIMEOUT)
            busy = worker_row("phone-1", status="busy")
            await page.wait_for_selector(busy, timeout=WAIT_MS)
            first = await page.get_attribute(busy, "data-worker-id")
            mark = len(rig.server.lines)

            await page.click(f"{busy} button.drain")
            await page.wait_for_selector(worker_row("phone-1", draining="true"), timeout=WAIT_MS)
            assert await page.inner_text(f"{busy} td.state") == "busy · draining"
            # Never mid-session: the player keeps playing, told nothing.
            seen = viewer.frames_received
            await asyncio.wait_for(viewer.wait_frame(lambda f: f.index >= seen + 10), TIMEOUT)
            assert player.shutdown is None
            assert not [ln for ln in rig.server.lines[mark:] if "worker_shutdown" in ln]
            await player.leave()

        # Its next life registers (a new id, the same name) and is held.
        held = worker_row("phone-1", status="held")
        await page.wait_for_selector(held, timeout=TIMEOUT * 1000)
        assert await page.get_attribute(held, "data-worker-id") != first
        assert await page.inner_text(f"{held} button.drain") == "undrain"
        async with connect(rig.server.ws_url("client")) as late:
            await late.send(Join())
            assert (await late.expect(Rejected)).reason == "no_worker_available"

        await page.click(f"{held} button.drain")  # undrain
        await page.wait_for_selector(worker_row("phone-1", status="available"), timeout=WAIT_MS)
        async with TestPeer.join(rig.server.url) as player:
            await asyncio.wait_for(player.wait_connected(), TIMEOUT)
            busy = worker_row("phone-1", status="busy")
            await page.wait_for_selector(busy, timeout=WAIT_MS)
            second = await page.get_attribute(busy, "data-worker-id")

            # Restart: two clicks (the first only arms it); its player is told.
            await page.click(f"{busy} button.restart")
            await page.click(f'{busy} button.restart[data-armed="yes"]')
            await asyncio.wait_for(player.shutdown_event.wait(), TIMEOUT)
            assert player.shutdown is not None and player.shutdown.reason == "worker_failed"
        again = worker_row("phone-1", status="available")
        await page.wait_for_selector(again, timeout=TIMEOUT * 1000)
        assert await page.get_attribute(again, "data-worker-id") not in (first, second)
        await rig.server.assert_consistent()


async def test_without_the_token_the_api_refuses_and_the_page_says_so(players: Players) -> None:
    async with running_server(**SERVER, status_token=TOKEN) as server:
        page = await players.open(f"{server.url}/admin")
        await page.wait_for_function("document.body.dataset.auth === 'denied'", timeout=WAIT_MS)
        assert await page.is_visible("#denied") and not await page.is_visible("#fleet")
        assert "status token" in await page.inner_text("#denied-text")
        status = await page.evaluate("fetch('/api/admin/state').then(r => r.status)")
        assert status == 403
        # The token typed into the page opens it, for this tab only.
        await page.fill("#token-input", TOKEN)
        await page.click("#token-form button")
        await page.wait_for_function("document.body.dataset.auth === 'ok'", timeout=WAIT_MS)
        assert await page.is_visible("#fleet")
