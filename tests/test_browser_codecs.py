"""Chromium and the codec rules (issue 15): what the page says it decodes, who it
is paired with, and the straight answers when it cannot play.

A Chromium that "lacks" H.264 is made by filtering H.264 out of
RTCRtpReceiver.getCapabilities before the page runs (its decoder is still
there, but the page, and so the server, only know what the capabilities say).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from browser_support import (
    FAST_SERVER,
    RECORDER_JS,
    WAIT_MS,
    Players,
    picture_to_page,
    play,
    reason,
    sent_on_socket,
    wait_state,
    wait_white,
)
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

NO_H264_JS = """
(() => {
  const real = RTCRtpReceiver.getCapabilities.bind(RTCRtpReceiver);
  RTCRtpReceiver.getCapabilities = (kind) => {
    const caps = real(kind);
    if (kind === 'video' && caps) caps.codecs = caps.codecs.filter(c => !/h264/i.test(c.mimeType));
    return caps;
  };
})();
"""

NO_WEBRTC_JS = """
for (const name of ['RTCPeerConnection', 'webkitRTCPeerConnection', 'RTCRtpReceiver']) {
  delete window[name];
}
window.__sockets = 0;
const RealSocket = WebSocket;
window.WebSocket = function (...args) { window.__sockets += 1; return new RealSocket(...args); };
"""


@contextlib.asynccontextmanager
async def workers_with(
    players: Players, *codec_lists: str, **settings: float | str
) -> AsyncIterator[tuple[ServerProcess, list[tuple[WorkerProcess, str]]]]:
    """A server and one synthetic worker per codec list, registered in that order."""
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(**{**FAST_SERVER, **settings}))
        workers = []
        for codecs in codec_lists:
            proc = await stack.enter_async_context(
                running_worker(server.ws_base, "--codecs", codecs)
            )
            _, worker_id = await proc.wait_registered(timeout=60)
            workers.append((proc, worker_id))
        try:
            yield server, workers
        except BaseException:
            await players.save_failure()
            raise


async def card(page: Page) -> tuple[str, str]:
    title: str = await page.inner_text("#status-title")
    text: str = await page.inner_text("#status-text")
    return title, text


def worker_status(doc: dict[str, object], worker_id: str) -> str:
    workers = doc["workers"]
    assert isinstance(workers, list)
    return str(next(w["status"] for w in workers if w["id"] == worker_id))


async def test_join_carries_the_decodable_codecs(players: Players) -> None:
    async with workers_with(players, "H264,VP8") as (server, [(_, worker_id)]):
        page = await players.open(server.url, init_script=RECORDER_JS)
        caps = await page.evaluate(
            "RTCRtpReceiver.getCapabilities('video').codecs.map(c => c.mimeType.slice(6))"
        )
        await play(page)
        join = next(m for m in await sent_on_socket(page) if m["type"] == "join")
        assert "H264" in join["codecs"] and "VP8" in join["codecs"]
        assert not {"RTX", "RED", "ULPFEC"} & set(join["codecs"])
        assert set(join["codecs"]) <= {c.upper() for c in caps}
        doc = await server.status()
        assert [s["codec"] for s in doc["sessions"]] == ["H264"]  # the worker's first choice
        assert worker_status(doc, worker_id) == "busy"


async def test_a_worker_without_a_shared_codec_is_passed_over_for_one_with_vp8(
    players: Players,
) -> None:
    async with workers_with(players, "H264", "H264,VP8") as (server, workers):
        (_, h264_only), (_, both) = workers
        page = await players.open(server.url, init_script=NO_H264_JS)
        await play(page)
        # The H.264-only worker has waited longest, yet the VP8 one is paired.
        assert await page.evaluate("document.body.dataset.worker") == both
        doc = await server.status()
        assert worker_status(doc, h264_only) == "available"
        assert [s["codec"] for s in doc["sessions"]] == ["VP8"]
        # Chromium decodes the synthetic game's VP8: a click shows its disc.
        x, y = 0.4, 0.55
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])
        inbound = await page.evaluate(
            """async () => { const s = await window.playcast.session.peer.getStats();
                const codecs = [...s.values()].filter(r => r.type === 'codec');
                return codecs.map(c => c.mimeType); }"""
        )
        assert "video/VP8" in inbound


async def test_unsupported_browser_gets_its_card_and_takes_no_worker(players: Players) -> None:
    async with workers_with(players, "H264") as (server, [(_, worker_id)]):
        page = await players.open(server.url, init_script=NO_H264_JS)
        await page.click("#play")
        await wait_state(page, "ended")
        assert await reason(page) == "unsupported_browser"
        title, text = await card(page)
        assert title == "This browser cannot play the game's video"
        assert "Chrome, Edge or Firefox" in text and "Wi-Fi" not in text
        doc = await server.status()
        assert worker_status(doc, worker_id) == "available" and not doc["sessions"]
        assert "unsupported_browser" in await server.metrics()


async def test_no_webrtc_says_so_on_load_and_opens_no_socket(players: Players) -> None:
    async with workers_with(players, "H264,VP8") as (server, [(_, worker_id)]):
        page = await players.open(server.url, init_script=NO_WEBRTC_JS)
        await wait_state(page, "unsupported")
        assert await reason(page) == "no_webrtc"
        assert not await page.is_visible("#play")
        assert await page.is_visible(".status-icon")
        title, text = await card(page)
        assert title == "This browser cannot play Playcast"
        assert "WebRTC" in text and "Chrome, Edge or Firefox" in text
        # Play cannot be pressed; even called directly it does nothing.
        await page.evaluate("window.playcast.start()")
        assert await page.evaluate("document.body.dataset.state") == "unsupported"
        assert await page.evaluate("window.__sockets") == 0
        doc = await server.status()
        assert doc["clients"] == [] and worker_status(doc, worker_id) == "available"


SRD_THROWS_JS = """
RTCPeerConnection.prototype.setRemoteDescription = function () {
  return Promise.reject(new DOMException('test: this offer is refused', 'OperationError'));
};
"""

CONSTRUCTOR_THROWS_JS = """
(() => {
  const Real = RTCPeerConnection;
  window.RTCPeerConnection = function () { throw new TypeError('test: no peer for you'); };
  window.RTCPeerConnection.prototype = Real.prototype;
})();
"""


@pytest.mark.parametrize(
    ("script", "kind", "title"),
    [
        (
            SRD_THROWS_JS,
            "negotiation",
            "Your browser and the game machine could not agree on a video format",
        ),
        (CONSTRUCTOR_THROWS_JS, "internal", "The video could not start"),
    ],
    ids=["setRemoteDescription", "constructor"],
)
async def test_a_failure_inside_the_page_is_reported_at_once(
    players: Players, script: str, kind: str, title: str
) -> None:
    # A handshake timeout far beyond the wait below: only the report ends it.
    async with workers_with(players, "H264,VP8", handshake_timeout=120) as (server, workers):
        page = await players.open(server.url, init_script=RECORDER_JS + script)
        await page.click("#play")
        await wait_state(page, "ended", timeout=WAIT_MS)
        assert await reason(page) == "handshake_failed"
        assert await page.evaluate("document.body.dataset.detail") == kind
        failed = [m for m in await sent_on_socket(page) if m["type"] == "webrtc_failed"]
        assert len(failed) == 1 and failed[0]["kind"] == kind, json.dumps(failed)
        assert "test:" in failed[0]["reason"]
        shown_title, text = await card(page)
        assert shown_title == title
        assert "Wi-Fi" not in text and "network" not in text
        # The worker is freed and registers again.
        [(proc, _)] = workers
        mark, _ = await proc.wait_registered()
        await proc.wait_registered(after=mark + 1, timeout=60)
        assert f'kind="{kind}",role="client"' in await server.metrics()
