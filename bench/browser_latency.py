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
- Tap to sound, for the same taps: the synthetic game clicks in the next Opus
  packet (10 ms) after each touch-down, and its worker writes each packet's
  RFC 6464 level in the RTP header. ``sound`` is when the browser's audio
  jitter buffer hands the click to the track, which the page plays through
  its <video> element: the page polls getSynchronizationSources() while a
  probe is armed, and the first loud entry's timestamp (the jitter buffer's
  delivery, in 10 ms chunks) is the time. What follows is the sound device's
  own buffer (the player's hardware; Chromium's ``media-playout`` stats give
  it). ``webaudio``, a second ear on the same taps: an AudioWorklet on the
  received track finds the click's first loud sample, put on the page clock
  with getOutputTimestamp() less the context's outputLatency: what a page
  playing its sound through an AudioContext would have ready for the device.
  Where the time goes: waiting for the next Opus packet (half a packet on
  average), the audio jitter buffer (getStats), the rest (worker, network,
  decode). Firefox: both ears where it offers them (its synchronization
  source timestamps are its own estimate of the playout time).
- Audio/video offset: the click's ``sound`` time minus the disc frame's
  display time, for the same tap.

    .venv/bin/python bench/browser_latency.py            # full: 10 sessions, 100 taps per run
    .venv/bin/python bench/browser_latency.py --quick    # CI: 2 sessions, 15 taps per run
    .venv/bin/python bench/browser_latency.py --runs chromium:VP8,firefox:VP8
    .venv/bin/python bench/browser_latency.py --check    # exit 1 when a target is missed
    .venv/bin/python bench/browser_latency.py --runs chromium:H264 --worker-arg=--audio-frame-ms=20
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
    "sound_p50_ms": 60.0,
    "sound_p95_ms": 90.0,
    "av_offset_abs_p95_ms": 40.0,
}
# playcast.backends.audio.CLICK_THRESHOLD (a sample's peak), and the RFC 6464
# level a packet with the click's start has (about -17 dBov; the hum is -43).
CLICK_THRESHOLD = 0.25
CLICK_LEVEL = 10 ** (-30 / 20)


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


# Run once a session is connected: the two ears (see the module's docstring).
# Both write into the armed probe: ``released`` (jitter buffer to track, from
# the synchronization sources) and ``heard`` (AudioWorklet, at the speaker).
EARS_JS = """
(async (threshold, level, target) => {
  const b = window.__bench;
  const receiver = window.playcast.session.peer.pc.getReceivers()
    .find((r) => r.track && r.track.kind === 'audio');
  if (!receiver) return { audio: false }; // a worker run with --no-audio: picture only
  if (target !== null) receiver.jitterBufferTarget = target === 'default' ? null : target;
  const out = { audio: true, ssrc: false, worklet: false, base: NaN, output: NaN };
  if (receiver.getSynchronizationSources) {
    // Poll only while a probe waits for its click; the first loud entry after
    // the tap is the click leaving the jitter buffer.
    b.pollSources = () => {
      const timer = setInterval(() => {
        const p = b.probe;
        if (!p || p.released !== null) { clearInterval(timer); return; }
        if (performance.now() - p.tapAt > 2000) { clearInterval(timer); return; }
        for (const s of receiver.getSynchronizationSources()) {
          if (s.audioLevel === undefined) continue;
          b.levels = true;
          const at = s.timestamp - performance.timeOrigin; // epoch ms to the page clock
          if (s.audioLevel >= level && at > p.tapAt) { p.released = at; clearInterval(timer); }
        }
      }, 1);
    };
    out.ssrc = true;
  }
  if (window.AudioWorkletNode) {
    const code = `
      class Click extends AudioWorkletProcessor {
        constructor() { super(); this.quiet = 0; }
        process(inputs) {
          const ch = inputs[0] && inputs[0][0];
          if (!ch) return true;
          for (let i = 0; i < ch.length; i++) {
            if (Math.abs(ch[i]) >= ${threshold}) {
              if (this.quiet > 4800) this.port.postMessage(currentTime + i / sampleRate);
              this.quiet = 0;
            } else this.quiet++;
          }
          return true;
        }
      }
      registerProcessor('click', Click);`;
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
    await ctx.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(ctx, 'click');
    const mute = ctx.createGain();
    mute.gain.value = 0;
    ctx.createMediaStreamSource(new MediaStream([receiver.track]))
      .connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (e) => {
      const p = b.probe;
      if (!p || p.tapAt === null || p.heard !== null) return;
      const ts = ctx.getOutputTimestamp();
      p.heard = ts.performanceTime + (e.data - ts.contextTime) * 1000;
    };
    // Firefox headless keeps a context made outside a gesture suspended: no second ear.
    const wait = new Promise((resolve) => setTimeout(resolve, 2000));
    await Promise.race([ctx.resume(), wait]);
    out.worklet = ctx.state === 'running';
    if (!out.worklet) ctx.close();
    out.base = ctx.baseLatency ?? NaN;
    out.output = ctx.outputLatency ?? NaN;
  }
  return out;
})(THRESHOLD, LEVEL, TARGET)
"""


AUDIO_STATS_JS = """
(async () => {
  const report = await window.playcast.session.peer.getStats();
  let a = {}, playout = {};
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') a = s;
    if (s.type === 'media-playout') playout = s;
  });
  return {
    packets: a.packetsReceived, samples: a.totalSamplesReceived,
    emitted: a.jitterBufferEmittedCount, delay: a.jitterBufferDelay,
    target: a.jitterBufferTargetDelay, minimum: a.jitterBufferMinimumDelay,
    arrival_jitter_ms: a.jitter * 1000, lost: a.packetsLost, concealed: a.concealedSamples,
    playout_delay: playout.totalPlayoutDelay, playout_samples: playout.totalSamplesCount,
  };
})()
"""


def _audio_over(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The audio receiver's figures over the taps only (getStats totals, differenced):
    the jitter buffer grows and shrinks during a session."""

    def d(key: str) -> float:
        return float(after.get(key) or 0) - float(before.get(key) or 0)

    def per(key: str, count: str) -> float | None:
        return 1000 * d(key) / d(count) if d(count) else None

    return {
        "packet_ms": d("samples") / d("packets") / 48 if d("packets") else None,
        "jitter_buffer_ms": per("delay", "emitted"),
        "jitter_buffer_target_ms": per("target", "emitted"),
        "jitter_buffer_minimum_ms": per("minimum", "emitted"),
        "arrival_jitter_ms": after.get("arrival_jitter_ms"),
        "packets_lost": d("lost"),
        "concealed_ms": d("concealed") / 48,
        "device_playout_ms": per("playout_delay", "playout_samples"),
    }


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
    """Opens ``url`` in a fresh page; ``script`` runs there too, before the page's own."""

    async def __call__(self, url: str, width: int, height: int, script: str = "") -> Player: ...


@asynccontextmanager
async def chromium_opener() -> AsyncIterator[tuple[str, Opener]]:
    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            async def open_page(url: str, width: int, height: int, script: str = "") -> Player:
                context = await browser.new_context(viewport={"width": width, "height": height})
                await context.add_init_script(PROBE_JS + script)
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

        async def open_page(url: str, width: int, height: int, script: str = "") -> Player:
            tab = await ff.new_tab(preload=PROBE_JS + script)
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
    sound_ms: list[float] = field(default_factory=list)  # jitter buffer to track
    sound_webaudio_ms: list[float] = field(default_factory=list)  # AudioWorklet, less output
    av_offset_ms: list[float] = field(default_factory=list)  # sound minus picture
    sound_missed: int = 0  # clicks the synchronization-source poll did not catch
    webaudio_missed: int = 0  # clicks the AudioWorklet did not hear within 2 s
    ears: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)
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
            **_percentiles("sound", self.sound_ms),
            **_percentiles("sound_webaudio", self.sound_webaudio_ms),
            **_percentiles("av_offset", self.av_offset_ms, p95=False),
            **_percentiles("av_offset_abs", [abs(o) for o in self.av_offset_ms], p50=False),
        }

    def sound_account(self) -> str:
        """Where tap to sound goes, on average."""
        packet = self.audio.get("packet_ms") or float("nan")
        jitter = self.audio.get("jitter_buffer_ms") or float("nan")
        mean = statistics.mean(self.sound_ms)
        rest = mean - packet / 2 - jitter
        line = (
            f"sound, mean {mean:.1f} ms = next {packet:.0f} ms packet ~{packet / 2:.1f}"
            f" + audio jitter buffer {jitter:.1f} + rest {rest:.1f} (worker, network,"
            " decode, less up to 10 ms: the ear dates the 10 ms chunk the click starts in)"
        )
        if self.sound_webaudio_ms:
            extra = statistics.mean(self.sound_webaudio_ms) - mean
            line += f"; Web Audio would add {extra:.1f}"
        device = self.audio.get("device_playout_ms")
        if device:
            line += f"; then the sound device {device:.1f}"
        return line


def _percentiles(
    name: str, values: list[float], p50: bool = True, p95: bool = True
) -> dict[str, float]:
    """p50/p95 of one sound figure; nothing when the browser could not measure it."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"{name}_p50_ms": percentile(ordered, 50)} if p50 else {}
    if p95:
        out[f"{name}_p95_ms"] = percentile(ordered, 95)
    return out


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
    audio_target: str | None = None,
) -> None:
    """One player: Play to first frame, the worker's CPU over ``cpu_window``
    seconds of steady streaming, then ``taps`` taps (their sound too), then Leave."""
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
        ears: dict[str, Any] = {}
        if taps:
            ears = res.ears = await page.evaluate(
                EARS_JS.replace("THRESHOLD", str(CLICK_THRESHOLD))
                .replace("LEVEL", str(CLICK_LEVEL))
                .replace("TARGET", json.dumps(audio_target))
            )
        ssrc, worklet = ears.get("ssrc", False), ears.get("worklet", False)
        output_ms = 1000 * ears.get("output", float("nan"))
        audio_before = await page.evaluate(AUDIO_STATS_JS) if ears.get("audio") else {}
        for x, y in taps:
            # A random phase against the frame clock, as a real player's would be.
            await asyncio.sleep(rng.uniform(0.04, 0.09))
            await page.evaluate(
                f"window.__bench.probe = {{ x: {x}, y: {y}, tapAt: null, seen: null,"
                " released: null, heard: null }"
            )
            await page.click(*await _picture_to_page(page, x, y))
            if ssrc:
                await page.evaluate("window.__bench.pollSources()")
            await _wait_probe(
                page,
                # The picture must come; an ear may miss a click when the page
                # is starved (counted): give each 2 s.
                "(p => p.seen !== null && (performance.now() - p.tapAt > 2000"
                f" || (({str(not ssrc).lower()} || p.released !== null)"
                f" && ({str(not worklet).lower()} || p.heard !== null))))(window.__bench.probe)",
                10,
            )
            probe: dict[str, Any] = await page.evaluate("window.__bench.probe")
            seen = probe["seen"]
            res.tap_ms.append(seen["expectedDisplayTime"] - probe["tapAt"])
            res.tap_present_ms.append(seen["presentationTime"] - probe["tapAt"])
            if seen.get("receiveTime"):
                res.tap_receive_ms.append(seen["receiveTime"] - probe["tapAt"])
            if ssrc and probe["released"] is None:
                res.sound_missed += 1
            elif ssrc:
                res.sound_ms.append(probe["released"] - probe["tapAt"])
                res.av_offset_ms.append(probe["released"] - seen["expectedDisplayTime"])
            if worklet and probe["heard"] is None:
                res.webaudio_missed += 1
            elif worklet:
                res.sound_webaudio_ms.append(probe["heard"] - output_ms - probe["tapAt"])
        if ears.get("audio"):
            res.audio = _audio_over(audio_before, await page.evaluate(AUDIO_STATS_JS))
        if taps:
            res.stats = await page.evaluate(
                "(async () => { const s = await window.playcast.session.peer.getStats();"
                " const v = [...s.values()]"
                ".find(r => r.type === 'inbound-rtp' && r.kind === 'video');"
                " const c = v && s.get(v.codecId);"
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
            running_worker(server.ws_base, *size, "--codecs", codec, *args.worker_arg)
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
            await _session(open_page, server, worker, res, taps, rng, window, args.audio_target)
            mark = await _next_registration(worker, mark)
    return res


async def _next_registration(worker: WorkerProcess, mark: int) -> int:
    """Wait for the worker to restart and register again after a session."""
    mark, _ = await worker.wait_registered(after=mark + 1, timeout=60)
    return mark


async def _wait_probe(page: Player, expression: str, timeout: float) -> None:
    """Wait for a tap's picture (and sound); on a timeout, say what was missing."""
    try:
        await page.wait_for(expression, timeout)
    except Exception:
        probe = await page.evaluate("JSON.stringify(window.__bench.probe)")
        raise RuntimeError(f"no picture or sound within {timeout} s of a tap: {probe}") from None


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )


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
    parser.add_argument("--taps", type=int, help="taps per run (default 100; 15 with --quick)")
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="one more worker flag, e.g. --worker-arg=--audio-frame-ms=20 (repeatable)",
    )
    parser.add_argument(
        "--audio-target",
        help="set the audio receiver's jitterBufferTarget (ms, or 'default') over the page's 0",
    )
    args = parser.parse_args()
    if args.audio_target not in (None, "default"):
        args.audio_target = float(args.audio_target)
    args.joins = 2 if args.quick else 10
    args.taps = args.taps or (15 if args.quick else 100)
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
    keys = list(dict.fromkeys(k for summary in summaries for k in summary))
    for key in keys:
        target = TARGETS.get(key)
        row = []
        for label, summary in zip(labels, summaries, strict=True):
            value = summary.get(key, float("nan"))
            ok = target is None or value != value or value <= target
            if not ok:
                missed.append(f"{label} {key}")
            row.append(f"{value:14.1f}{' ' if ok else '!'}")
        verdict = f"  (target <= {target:g})" if target is not None else ""
        print(f"  {key:<20} " + " ".join(row) + verdict)
    print("  browsers: " + ", ".join(r.browser for r in results))
    for label, r in zip(labels, results, strict=True):
        if r.stats:
            print(f"  {label} receiver: " + ", ".join(f"{k} {v}" for k, v in r.stats.items()))
        if r.ears.get("audio"):
            ears = [name for name in ("ssrc", "worklet") if r.ears.get(name)]
            print(f"  {label} sound ears: {', '.join(ears) or 'none'}; audio: " + _fmt(r.audio))
        if r.sound_ms:
            print(f"  {label} {r.sound_account()}")
        if r.sound_missed or r.webaudio_missed:
            print(
                f"  {label} clicks missed (page starved): {r.sound_missed} by the"
                f" synchronization-source poll, {r.webaudio_missed} by the AudioWorklet"
            )
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
