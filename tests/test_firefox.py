"""Playing in Debian's Firefox ESR, driven over WebDriver BiDi (playcast_testing.firefox).

Firefox runs on a fresh profile without H.264 (the OpenH264 plugin off, as on
an offline, managed or hardened install): the synthetic game, which sends
H.264 and VP8, is played over VP8; a worker that sends only H.264 (a phone)
cannot serve it, and the player is told so before any worker is taken.

Select with ``-m firefox``. Without firefox-esr these tests skip, except in CI
(CI set), where a missing browser fails them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from browser_support import ARTIFACTS, FAST_SERVER, PATCH_JS, call_failed
from playcast_testing.firefox import (
    NO_H264_PREFS,
    Firefox,
    Tab,
    firefox_missing,
    running_firefox,
)
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker

pytestmark = [pytest.mark.firefox, pytest.mark.asyncio(loop_scope="module")]

WAIT = 60.0
FRAMES_DECODED_JS = """window.playcast.session.peer.getStats().then(s =>
  [...s.values()].filter(r => r.type === 'inbound-rtp' && r.kind === 'video')
    .reduce((n, r) => n + (r.framesDecoded || 0), 0))"""

# What the page sends on its socket, as in browser_support.RECORDER_JS.
SOCKET_RECORDER_JS = """
window.__sent = [];
const wsSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.push(JSON.parse(data));
  return wsSend.call(this, data);
};
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def firefox() -> AsyncIterator[Firefox]:
    """One headless Firefox ESR for the module, with no H.264."""
    missing = firefox_missing()
    if missing:
        if os.environ.get("CI"):  # CI installs it: a missing browser is a failure there
            pytest.fail(missing)
        pytest.skip(missing)
    async with running_firefox(NO_H264_PREFS) as ff:
        yield ff


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(firefox: Firefox, request: pytest.FixtureRequest) -> AsyncIterator[list[Tab]]:
    """Tabs the test opens; screenshot and console log of each if it failed."""
    opened: list[Tab] = []
    try:
        yield opened
    finally:
        if call_failed(request):
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            for i, tab in enumerate(opened):
                png = b""
                with contextlib.suppress(Exception):
                    png = await tab.screenshot()
                _save(ARTIFACTS / f"{name}-tab{i}", png, tab.console)
        for tab in opened:
            await tab.close()


def _save(stem: Path, png: bytes, console: list[str]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    if png:
        stem.with_suffix(".png").write_bytes(png)
    stem.with_suffix(".log").write_text("".join(f"{line}\n" for line in console))


async def open_page(firefox: Firefox, tabs: list[Tab], url: str) -> Tab:
    tab = await firefox.new_tab(preload=SOCKET_RECORDER_JS)
    tabs.append(tab)
    await tab.set_viewport(390, 844)  # a phone's portrait: the picture fills the width
    await tab.navigate(url)
    return tab


@contextlib.asynccontextmanager
async def game(*codecs: str) -> AsyncIterator[tuple[ServerProcess, WorkerProcess, str]]:
    """A server and one synthetic worker sending ``codecs``, registered."""
    async with (
        running_server(**FAST_SERVER) as server,
        running_worker(server.ws_base, "--codecs", ",".join(codecs)) as worker,
    ):
        _, worker_id = await worker.wait_registered(timeout=60)
        yield server, worker, worker_id


async def picture_point(tab: Tab, x: float, y: float) -> tuple[float, float]:
    left, top, width, height, vw, vh = await tab.evaluate(
        """(v => { const r = v.getBoundingClientRect();
            return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight]; })
           (document.querySelector('#stream'))"""
    )
    scale = min(width / vw, height / vh)
    return left + (width - vw * scale) / 2 + x * vw * scale, top + (height - vh * scale) / 2 + (
        y * vh * scale
    )


async def test_firefox_without_h264_has_vp8(firefox: Firefox, tabs: list[Tab]) -> None:
    tab = await firefox.new_tab()
    tabs.append(tab)
    await tab.navigate("about:blank")
    codecs = await tab.evaluate(
        "RTCRtpReceiver.getCapabilities('video').codecs.map(c => c.mimeType.toUpperCase())"
    )
    assert "VIDEO/VP8" in codecs and "VIDEO/H264" not in codecs, codecs


async def test_whole_session_over_vp8_and_a_tap_shows_its_disc(
    firefox: Firefox, tabs: list[Tab]
) -> None:
    async with game("H264", "VP8") as (server, _, worker_id):
        tab = await open_page(firefox, tabs, server.url)
        await tab.click_element("#play")
        await tab.wait_for("document.body.dataset.state === 'connected'", timeout=WAIT)
        # Firefox counts no frames in getVideoPlaybackQuality for a WebRTC
        # stream: the receiver's own statistics say how many were decoded.
        await tab.wait_for("document.body.dataset.video === 'playing'", timeout=WAIT)
        await tab.wait_for(f"({FRAMES_DECODED_JS}).then(n => n >= 5)", timeout=WAIT)
        assert await tab.evaluate("document.body.dataset.worker") == worker_id
        join = next(m for m in await tab.evaluate("window.__sent") if m["type"] == "join")
        assert "VP8" in join["codecs"] and "H264" not in join["codecs"]
        doc = await server.status()
        assert [s["codec"] for s in doc["sessions"]] == ["VP8"]
        size = await tab.evaluate(
            "(v => [v.videoWidth, v.videoHeight])(document.querySelector('#stream'))"
        )
        assert size == [720, 1280]

        await tab.run(PATCH_JS)
        x, y = 0.3, 0.65
        assert not await tab.evaluate(f"window.__isWhite({x}, {y})")
        await tab.click(*await picture_point(tab, x, y), touch=True)
        await tab.wait_for(f"window.__isWhite({x}, {y})", timeout=WAIT)
        assert not await tab.evaluate("window.__isWhite(0.75, 0.25)"), "a disc away from the tap"

        await tab.click_element("#leave")
        await tab.wait_for("document.body.dataset.state === 'ended'")
        assert await tab.evaluate("document.body.dataset.reason") == "client_left"


async def test_h264_only_worker_ends_in_unsupported_browser_before_any_worker_is_taken(
    firefox: Firefox, tabs: list[Tab]
) -> None:
    async with game("H264") as (server, _, worker_id):
        tab = await open_page(firefox, tabs, server.url)
        await tab.click_element("#play")
        await tab.wait_for("document.body.dataset.state === 'ended'", timeout=WAIT)
        assert await tab.evaluate("document.body.dataset.reason") == "unsupported_browser"
        title = await tab.evaluate("document.querySelector('#status-title').textContent")
        text = await tab.evaluate("document.querySelector('#status-text').textContent")
        assert title == "Firefox needs its H.264 plugin for this game"
        assert "OpenH264" in text and "Chrome or Edge" in text and "Wi-Fi" not in text
        # Pongs answer the server's pings; of its own accord the page said join.
        sent = [m["type"] for m in await tab.evaluate("window.__sent") if m["type"] != "pong"]
        assert sent == ["join"]
        doc = await server.status()
        assert [w["status"] for w in doc["workers"] if w["id"] == worker_id] == ["available"]
        assert doc["sessions"] == []


# The page believes it decodes H.264 (an old or lying capabilities list), so
# it is paired with the H.264-only worker; Firefox's own answer then rejects
# the video line, and the page reports that at once as a failed negotiation.
CLAIM_H264_JS = """
const real = RTCRtpReceiver.getCapabilities.bind(RTCRtpReceiver);
RTCRtpReceiver.getCapabilities = (kind) => {
  const caps = real(kind);
  if (kind === 'video' && caps) caps.codecs.unshift({ mimeType: 'video/H264', clockRate: 90000 });
  return caps;
};
"""


async def test_a_rejected_video_line_is_a_failed_negotiation_not_the_network(
    firefox: Firefox, tabs: list[Tab]
) -> None:
    async with game("H264") as (server, worker, _):
        mark, _ = await worker.wait_registered()
        tab = await firefox.new_tab(preload=SOCKET_RECORDER_JS + CLAIM_H264_JS)
        tabs.append(tab)
        await tab.navigate(server.url)
        await tab.click_element("#play")
        await tab.wait_for("document.body.dataset.state === 'ended'", timeout=WAIT)
        assert await tab.evaluate("document.body.dataset.reason") == "handshake_failed"
        assert await tab.evaluate("document.body.dataset.detail") == "negotiation"
        failed = [m for m in await tab.evaluate("window.__sent") if m["type"] == "webrtc_failed"]
        assert len(failed) == 1 and failed[0]["kind"] == "negotiation"
        assert "m=video 0" in failed[0]["reason"]
        assert not [m for m in await tab.evaluate("window.__sent") if m["type"] == "answer"]
        text = await tab.evaluate("document.querySelector('#status-text').textContent")
        assert "another browser" in text and "Wi-Fi" not in text
        await worker.wait_registered(after=mark + 1, timeout=60)  # freed at once
