"""What the browser tests share: Debian's headless Chromium (one per test
module), a fresh browser context per player, real server and worker
processes, page helpers that wait on events, and a screenshot of every open
page when a test fails (into test-artifacts/).

Registered as a pytest plugin in conftest.py (the failure hook must be a
plugin); tests import the helpers they use from here.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playcast_testing.browser import CHROMIUM, CHROMIUM_ARGS
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

ARTIFACTS = Path(os.environ.get("PLAYCAST_TEST_ARTIFACTS", "test-artifacts"))

DESKTOP: ViewportSize = {
    "width": 1280,
    "height": 720,
}  # landscape: bars left and right of the picture
PHONE: ViewportSize = {"width": 390, "height": 844}  # taller than 9:16: bars above and below

# Generous outer bounds: other engineers' tests share these two cores. Every
# wait below returns as soon as its event happens; these only bound a hang.
WAIT_MS = 30_000
SLOW_WAIT_MS = 60_000

# Server settings for the tests: fast heartbeats, the rest roomy enough for a
# loaded machine. Tests that time something pass their own.
FAST_SERVER: dict[str, float | str] = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 10,
    "shutdown_ack_timeout": 5,
}

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


# --- the failure hook -----------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each test's call report where its fixtures can read it at teardown."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


def call_failed(request: pytest.FixtureRequest) -> bool:
    """At fixture teardown: the test's call failed (or never ran)."""
    report = request.node.stash.get(_CALL_REPORT, None)
    return report is None or report.failed


# --- chromium and pages ----------------------------------------------------------


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole module: launching costs about a second."""
    missing = chromium_missing()
    if missing:
        if os.environ.get("CI"):  # CI installs it: a missing browser is a failure there
            pytest.fail(missing)
        pytest.skip(missing)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Players:
    """Opens player pages, each in its own context (own cookies, own socket)."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name
        self.saved = False
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []
        self.logs: dict[int, list[str]] = {}

    async def open(
        self,
        url: str,
        *,
        viewport: ViewportSize | None = None,
        touch: bool = False,
        init_script: str | None = None,
    ) -> Page:
        viewport = viewport or (PHONE if touch else DESKTOP)
        context = await self.browser.new_context(
            viewport=viewport, has_touch=touch, is_mobile=touch, device_scale_factor=1
        )
        self.contexts.append(context)
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        log = self.logs.setdefault(len(self.pages), [])
        page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
        self.pages.append(page)
        await page.goto(url)
        return page

    async def save_failure(self) -> None:
        """Screenshot and console log of every page, once, as they are now."""
        if self.saved:
            return
        self.saved = True
        for i, page in enumerate(self.pages):
            stem = ARTIFACTS / f"{self.name}-page{i}"
            with contextlib.suppress(Exception):
                await page.screenshot(path=f"{stem}.png", timeout=10_000)
            with contextlib.suppress(Exception):
                state = await page.evaluate("JSON.stringify(document.body.dataset)")
                self.logs[i].append(f"body dataset at failure: {state}")
            _write_lines(Path(f"{stem}.log"), self.logs.get(i, []))

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


@pytest_asyncio.fixture(loop_scope="module")
async def players(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Players]:
    """Pages for one test; on failure each is screenshotted before it closes."""
    p = Players(browser, re.sub(r"[^\w.-]+", "_", request.node.name))
    try:
        yield p
    finally:
        if call_failed(request):
            await p.save_failure()
        await p.close()


# --- real processes ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def system(
    players: Players, workers: int = 1, **settings: float | str
) -> AsyncIterator[tuple[ServerProcess, list[WorkerProcess]]]:
    """A server process and ``workers`` synthetic worker processes, all registered.

    If the body fails, the pages are saved first, while the processes still
    run: the screenshot shows the failure, not the teardown.
    """
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(**{**FAST_SERVER, **settings}))
        procs = [
            await stack.enter_async_context(running_worker(server.ws_base)) for _ in range(workers)
        ]
        if workers:
            await server.wait_status(lambda doc: available(doc) >= workers, timeout=60)
        try:
            yield server, procs
        except BaseException:
            await players.save_failure()
            raise


def available(doc: dict[str, Any]) -> int:
    return sum(1 for w in doc["workers"] if w["status"] == "available")


# --- page helpers ---------------------------------------------------------------------


async def wait_state(page: Page, state: str, *, timeout: float = WAIT_MS) -> None:
    """Wait for <body data-state=state>; on a timeout, say where the page is instead."""
    try:
        await page.wait_for_function(
            "s => document.body.dataset.state === s", arg=state, timeout=timeout
        )
    except Exception as exc:
        data = await page.evaluate("JSON.stringify(document.body.dataset)")
        raise AssertionError(f"page never reached {state!r}; body: {data}") from exc


async def play(page: Page) -> None:
    """Press Play and wait until the video shows frames."""
    await page.click("#play")
    await wait_playing(page)


async def wait_playing(page: Page, frames: int = 5) -> None:
    await wait_state(page, "connected", timeout=SLOW_WAIT_MS)
    await page.wait_for_function(
        """n => document.body.dataset.video === 'playing'
            && document.querySelector('#stream').getVideoPlaybackQuality().totalVideoFrames >= n""",
        arg=frames,
        timeout=WAIT_MS,
    )


async def reason(page: Page) -> str | None:
    value: str | None = await page.evaluate("document.body.dataset.reason ?? null")
    return value


async def picture_to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the picture point (x, y), computed here, not by the page's code."""
    box = await page.evaluate(
        """() => { const v = document.querySelector('#stream'); const r = v.getBoundingClientRect();
            return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight]; }"""
    )
    left, top, width, height, vw, vh = box
    scale = min(width / vw, height / vh)
    pw, ph = vw * scale, vh * scale
    return left + (width - pw) / 2 + x * pw, top + (height - ph) / 2 + y * ph


# Mean of a 5x5 patch of the decoded picture at a normalized point, read back
# through a canvas: the disc is pure white, the scene never brighter than ~215.
PATCH_JS = """
window.__patch = (x, y) => {
  const v = document.querySelector('#stream');
  if (!v.videoWidth) return null;
  const c = window.__patchCanvas || (window.__patchCanvas = document.createElement('canvas'));
  c.width = 5; c.height = 5;
  const g = c.getContext('2d', { willReadFrequently: true });
  const px = Math.round(x * (v.videoWidth - 1)) - 2, py = Math.round(y * (v.videoHeight - 1)) - 2;
  g.drawImage(v, px, py, 5, 5, 0, 0, 5, 5);
  const d = g.getImageData(0, 0, 5, 5).data;
  let r = 0, gr = 0, b = 0;
  for (let i = 0; i < d.length; i += 4) { r += d[i]; gr += d[i + 1]; b += d[i + 2]; }
  return [r / 25, gr / 25, b / 25];
};
window.__isWhite = (x, y) => {
  const p = window.__patch(x, y);
  return !!p && Math.min(...p) >= 235;
};
"""


async def install_probe(page: Page) -> None:
    await page.evaluate(PATCH_JS)


async def wait_white(
    page: Page, points: list[tuple[float, float]], *, timeout: float = WAIT_MS
) -> None:
    """Wait until a decoded frame is white at every one of ``points`` at once."""
    await install_probe(page)
    await page.wait_for_function(
        "pts => pts.every(([x, y]) => window.__isWhite(x, y))", arg=points, timeout=timeout
    )


async def is_white(page: Page, x: float, y: float) -> bool:
    await install_probe(page)
    result: bool = await page.evaluate("([x, y]) => window.__isWhite(x, y)", [x, y])
    return result


# Records what the page sends: data-channel messages and signaling frames.
# The page's own word on its picture (quality.js: {"type":"picture"}, sent
# when a loaded machine stalls the picture for 2 s) is not input: left out.
RECORDER_JS = """
window.__sent = { channel: [], socket: [], pictures: [] };
const chSend = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (data) {
  const picture = typeof data === 'string' && data.startsWith('{"type":"picture"');
  (picture ? window.__sent.pictures : window.__sent.channel).push(
    { t: performance.now(), label: this.label, data });
  return chSend.call(this, data);
};
const wsSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.socket.push({ t: performance.now(), data });
  return wsSend.call(this, data);
};
"""


async def sent_on_channel(page: Page) -> list[str]:
    result: list[str] = await page.evaluate(
        "window.__sent.channel.filter(m => m.label === 'input').map(m => m.data)"
    )
    return result


async def sent_on_socket(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(
        "window.__sent.socket.map(m => ({t: m.t, ...JSON.parse(m.data)}))"
    )
    return result
