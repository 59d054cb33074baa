"""Player-side speed, measured in headless Chromium and Firefox on the real page.

For each run (browser and codec: Chromium over H.264 and VP8, Firefox ESR
over VP8, side by side) starts a real server and one real synthetic worker
(720x1280, 30 fps by default) sending that codec only, and opens the player
page in Debian's chromium (Playwright) or firefox-esr (WebDriver BiDi). Every
time is taken inside the page, on the page's own clock, so the driver's round
trips never count:

- Play to first frame: the click event's timeStamp on #play to the
  expectedDisplayTime of the first frame requestVideoFrameCallback reports,
  over several sessions, each on a freshly restarted worker.
- Tap to photon: a pointerdown's timeStamp on the video to the
  expectedDisplayTime of the first frame (requestVideoFrameCallback) whose
  pixels show the white disc at the tap point, read back through a canvas;
  p50/p95 over N taps. Two splits of the same taps: ``present``, up to the
  frame's handing to the compositor (presentationTime), and ``receive``, up to
  its last packet's arrival (receiveTime): what comes before the browser's
  jitter buffer, decoder and renderer.
- Worker CPU per stream: the synthetic worker process's CPU time (user +
  system) over a steady stretch of streaming without input, as % of one core.

    .venv/bin/python bench/browser_latency.py            # full: 10 sessions, 100 taps per run
    .venv/bin/python bench/browser_latency.py --quick    # CI: 2 sessions, 15 taps per run
    .venv/bin/python bench/browser_latency.py --runs chromium:VP8,firefox:VP8
    .venv/bin/python bench/browser_latency.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import psutil
from playcast_testing.browser import CHROMIUM, CHROMIUM_ARGS
from playcast_testing.firefox import NO_H264_PREFS, Firefox, Tab, running_firefox
from playcast_testing.metrics import percentile
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from playwright.async_api import Browser, Page, async_playwright

LOAD_BEFORE = os.getloadavg()
TARGETS = {
    "first_frame_ms": 400.0,
    "tap_p50_ms": 25.0,
    "tap_p95_ms": 50.0,
}


# Installed before the page's own scripts. It records the Play click, the
# first frame, and, for each armed probe, the first frame that is white at
# the probe's point. The white threshold: the disc is RGB 255, the scene never
# brighter than about 215 in its darkest channel.
PROBE_JS = """
window.__bench = { playAt: null, first: null, probe: null };
document.addEventListener('click', (e) => {
  if (e.target.closest && e.target.closest('#play')) window.__bench.playAt = e.timeStamp;
}, true);
document.addEventListener('pointerdown', (e) => {
  const p = window.__bench.probe;
  if (p && p.tapAt === null && e.target.id === 'stream') p.tapAt = e.timeStamp;
}, true);
const canvas = document.createElement('canvas');
canvas.width = canvas.height = 5;
const g = canvas.getContext('2d', { willReadFrequently: true });
function white(v, x, y) {
  g.drawImage(v, Math.round(x * (v.videoWidth - 1)) - 2, Math.round(y * (v.videoHeight - 1)) - 2,
              5, 5, 0, 0, 5, 5);
  const d = g.getImageData(0, 0, 5, 5).data;
  let lo = 255;
  for (let c = 0; c < 3; c++) {
    let sum = 0;
    for (let i = c; i < d.length; i += 4) sum += d[i];
    lo = Math.min(lo, sum / 25);
  }
  return lo >= 235;
}
function onFrame(now, meta) {
  const b = window.__bench, v = document.querySelector('#stream');
  if (b.first === null) b.first = meta;
  const p = b.probe;
  if (p && p.tapAt !== null && p.seen === null && white(v, p.x, p.y)) p.seen = meta;
  v.requestVideoFrameCallback(onFrame);
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelector('#stream').requestVideoFrameCallback(onFrame);
});
"""


class Player(Protocol):
    """One page, whichever browser drives it."""

    async def evaluate(self, expression: str) -> Any: ...
    async def wait_for(self, expression: str, timeout: float) -> None: ...
    async def click(self, x: float, y: float) -> None: ...
    async def click_element(self, selector: str) -> None: ...
    async def close(self) -> None: ...


class ChromiumPlayer:
    def __init__(self, page: Page) -> None:
        self.page = page

    async def evaluate(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def wait_for(self, expression: str, timeout: float) -> None:
        await self.page.wait_for_function(expression, timeout=timeout * 1000)

    async def click(self, x: float, y: float) -> None:
        await self.page.mouse.click(x, y)

    async def click_element(self, selector: str) -> None:
        await self.page.click(selector)

    async def close(self) -> None:
        await self.page.context.close()


class FirefoxPlayer:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    async def evaluate(self, expression: str) -> Any:
        return await self.tab.evaluate(expression)

    async def wait_for(self, expression: str, timeout: float) -> None:
        await self.tab.wait_for(expression, timeout=timeout)

    async def click(self, x: float, y: float) -> None:
        await self.tab.click(x, y)

    async def click_element(self, selector: str) -> None:
        await self.tab.click_element(selector)

    async def close(self) -> None:
        await self.tab.close()


class Opener(Protocol):
    async def __call__(self, url: str, width: int, height: int) -> Player: ...


@asynccontextmanager
async def chromium_opener() -> AsyncIterator[tuple[str, Opener]]:
    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            async def open_page(url: str, width: int, height: int) -> Player:
                context = await browser.new_context(viewport={"width": width, "height": height})
                await context.add_init_script(PROBE_JS)
                page = await context.new_page()
                await page.goto(url)
                return ChromiumPlayer(page)

            yield f"Chromium {browser.version}", open_page
        finally:
            await browser.close()


@asynccontextmanager
async def firefox_opener() -> AsyncIterator[tuple[str, Opener]]:
    # No H.264, as Firefox is wherever the OpenH264 plugin is missing: VP8 it is.
    async with running_firefox(NO_H264_PREFS) as firefox:
        ff: Firefox = firefox

        async def open_page(url: str, width: int, height: int) -> Player:
            tab = await ff.new_tab(preload=PROBE_JS)
            await tab.set_viewport(width, height)
            await tab.navigate(url)
            return FirefoxPlayer(tab)

        yield f"Firefox {ff.version}", open_page


OPENERS = {"chromium": chromium_opener, "firefox": firefox_opener}


@dataclass
class Results:
    browser: str
    codec: str
    width: int
    height: int
    fps_target: int
    first_frame_ms: list[float] = field(default_factory=list)
    tap_ms: list[float] = field(default_factory=list)
    tap_present_ms: list[float] = field(default_factory=list)
    tap_receive_ms: list[float] = field(default_factory=list)
    stats: dict[str, str] = field(default_factory=dict)
    # The browser's very first session (codec and script caches cold): shown, not in the median.
    cold_first_frame_ms: float = float("nan")
    worker_cpu_pct: float = float("nan")

    def summary(self) -> dict[str, float]:
        taps = sorted(self.tap_ms)
        present = sorted(self.tap_present_ms)
        receive = sorted(self.tap_receive_ms)
        return {
            "first_frame_ms": statistics.median(self.first_frame_ms),
            "first_frame_max_ms": max(self.first_frame_ms),
            "first_frame_cold_ms": self.cold_first_frame_ms,
            "tap_p50_ms": percentile(taps, 50),
            "tap_p95_ms": percentile(taps, 95),
            "tap_max_ms": taps[-1],
            "tap_present_p50_ms": percentile(present, 50),
            "tap_present_p95_ms": percentile(present, 95),
            "tap_receive_p50_ms": percentile(receive, 50) if receive else float("nan"),
            "tap_receive_p95_ms": percentile(receive, 95) if receive else float("nan"),
            "worker_cpu_pct": self.worker_cpu_pct,
        }


def _tap_points(n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Spots on a grid, in shuffled order: a spot comes back only after 96 others,
    long after its disc (shown about 0.6 s) is gone."""
    cells = [(0.1 + 0.8 * (i % 8) / 7, 0.12 + 0.76 * (i // 8) / 11) for i in range(96)]
    rng.shuffle(cells)
    return [cells[i % len(cells)] for i in range(n)]


async def _picture_to_page(page: Player, x: float, y: float) -> tuple[float, float]:
    left, top, width, height, vw, vh = await page.evaluate(
        """(v => { const r = v.getBoundingClientRect();
            return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight]; })
           (document.querySelector('#stream'))"""
    )
    scale = min(width / vw, height / vh)
    pw, ph = vw * scale, vh * scale
    return left + (width - pw) / 2 + x * pw, top + (height - ph) / 2 + y * ph


async def _session(
    open_page: Opener,
    server: ServerProcess,
    worker: WorkerProcess,
    res: Results,
    taps: list[tuple[float, float]],
    rng: random.Random,
    cpu_window: float = 0.0,
) -> None:
    """One player: Play to first frame, the worker's CPU over ``cpu_window``
    seconds of steady streaming, then ``taps`` taps, then Leave."""
    page = await open_page(server.url, res.width, res.height)
    try:
        await page.click_element("#play")
        await page.wait_for("window.__bench.first !== null", 60)
        first: dict[str, Any] = await page.evaluate(
            "({ at: window.__bench.playAt, frame: window.__bench.first })"
        )
        res.first_frame_ms.append(first["frame"]["expectedDisplayTime"] - first["at"])
        if taps or cpu_window:
            await page.wait_for("document.body.dataset.state === 'connected'", 60)
        if cpu_window:
            proc = psutil.Process(worker.proc.pid)
            before, started = proc.cpu_times(), time.monotonic()
            await asyncio.sleep(cpu_window)  # a measuring window: nothing to wait for
            after, took = proc.cpu_times(), time.monotonic() - started
            used = (after.user - before.user) + (after.system - before.system)
            res.worker_cpu_pct = 100 * used / took
        for x, y in taps:
            # A random phase against the frame clock, as a real player's would be.
            await asyncio.sleep(rng.uniform(0.04, 0.09))
            await page.evaluate(
                f"window.__bench.probe = {{ x: {x}, y: {y}, tapAt: null, seen: null }}"
            )
            await page.click(*await _picture_to_page(page, x, y))
            await page.wait_for("window.__bench.probe.seen !== null", 10)
            probe: dict[str, Any] = await page.evaluate("window.__bench.probe")
            seen = probe["seen"]
            res.tap_ms.append(seen["expectedDisplayTime"] - probe["tapAt"])
            res.tap_present_ms.append(seen["presentationTime"] - probe["tapAt"])
            if seen.get("receiveTime"):
                res.tap_receive_ms.append(seen["receiveTime"] - probe["tapAt"])
        if taps:
            res.stats = await page.evaluate(
                "(async () => { const s = await window.playcast.session.peer.getStats();"
                " const c = [...s.values()].find(r => r.type === 'codec');"
                " return { codec: c ? c.mimeType : '?' }; })()"
            )
        await page.click_element("#leave")
        await page.wait_for("document.body.dataset.state === 'ended'", 30)
    finally:
        await page.close()


async def bench(args: argparse.Namespace, browser: str, codec: str) -> Results:
    rng = random.Random(1)
    res = Results(browser, codec, args.width, args.height, args.fps)
    size = ("--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps))
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            running_server(heartbeat_interval=1.0, heartbeat_timeout=10.0)
        )
        worker = await stack.enter_async_context(
            running_worker(server.ws_base, *size, "--codecs", codec)
        )
        name, open_page = await stack.enter_async_context(OPENERS[browser]())
        res.browser = name
        mark, _ = await worker.wait_registered(timeout=60)
        # The first session warms the browser up; reported on its own.
        cold = Results(name, codec, args.width, args.height, args.fps)
        await _session(open_page, server, worker, cold, [], rng)
        res.cold_first_frame_ms = cold.first_frame_ms[0]
        mark = await _next_registration(worker, mark)
        for n in range(args.joins):
            last = n == args.joins - 1
            taps = _tap_points(args.taps, rng) if last else []
            window = args.cpu_window if last else 0.0
            await _session(open_page, server, worker, res, taps, rng, window)
            mark = await _next_registration(worker, mark)
    return res


async def _next_registration(worker: WorkerProcess, mark: int) -> int:
    """Wait for the worker to restart and register again after a session."""
    mark, _ = await worker.wait_registered(after=mark + 1, timeout=60)
    return mark


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer sessions and taps (CI)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=1280)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--runs",
        default="chromium:H264,chromium:VP8,firefox:VP8",
        help="browser:codec pairs, comma-separated (browsers: chromium, firefox)",
    )
    args = parser.parse_args()
    args.joins = 2 if args.quick else 10
    args.taps = 15 if args.quick else 100
    args.cpu_window = 2.0 if args.quick else 10.0
    runs = [tuple(r.split(":", 1)) for r in args.runs.split(",")]
    for run in runs:
        if len(run) != 2 or run[0] not in OPENERS:
            parser.error(f"bad run {':'.join(run)!r}: want browser:codec, browser in {OPENERS}")
    started = time.monotonic()
    results = [asyncio.run(bench(args, browser, codec.upper())) for browser, codec in runs]
    summaries = [r.summary() for r in results]
    first = results[0]
    print(f"browser latency, {first.width}x{first.height} @ {first.fps_target} fps, loopback")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in LOAD_BEFORE)}")
    labels = [f"{r.browser.split()[0]} {r.codec}" for r in results]
    print(f"  {'':<20} " + " ".join(f"{label:>15}" for label in labels))
    print(
        f"  {'sessions / taps':<20} "
        + " ".join(f"{f'{len(r.first_frame_ms)} / {len(r.tap_ms)}':>15}" for r in results)
    )
    missed = []
    for key in summaries[0]:
        target = TARGETS.get(key)
        row = []
        for label, summary in zip(labels, summaries, strict=True):
            value = summary[key]
            ok = target is None or value <= target
            if not ok:
                missed.append(f"{label} {key}")
            row.append(f"{value:14.1f}{' ' if ok else '!'}")
        verdict = f"  (target <= {target:g})" if target is not None else ""
        print(f"  {key:<20} " + " ".join(row) + verdict)
    print("  browsers: " + ", ".join(r.browser for r in results))
    for label, r in zip(labels, results, strict=True):
        if r.stats:
            print(f"  {label} receiver: " + ", ".join(f"{k} {v}" for k, v in r.stats.items()))
    if missed:
        print("  MISSED: " + ", ".join(missed))
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  took {time.monotonic() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [
                    {"summary": sm, "raw": asdict(r)}
                    for sm, r in zip(summaries, results, strict=True)
                ],
                f,
                indent=2,
            )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
