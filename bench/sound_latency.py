"""The game's sound at the player, measured in headless Chromium on the real page.

Tap to photon is bench/sound_latency.py's (Chromium and Firefox, per codec);
this one adds what sound takes, for the same taps, so the two are compared.

Starts a real server and one real synthetic worker (720x1280, 30 fps by
default) and opens the player page in Debian's chromium. Every time is taken
inside the page, on the page's own clock, so Playwright's round trips never
count:

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
- Tap to sound, for the same taps: the synthetic game clicks in the next
  20 ms Opus packet after each touch-down. An AudioWorklet on the received
  audio track finds the click's first loud sample; its time, moved to the page
  clock with AudioContext.getOutputTimestamp(), is when the speaker plays it,
  and that less the context's outputLatency is when the browser has it ready
  for the sound device (``sound``, what the targets judge: the device's own
  latency is the player's hardware). Where the time goes: the game's 20 ms
  framing (10 ms on average), the audio jitter buffer (getStats), and the rest
  (worker, network, decode, Web Audio's own buffering).
- Audio/video offset: the click's ``sound`` time minus the disc frame's
  display time, for the same tap.

    .venv/bin/python bench/sound_latency.py            # full: 10 sessions, 100 taps
    .venv/bin/python bench/sound_latency.py --quick    # CI: well under 40 s
    .venv/bin/python bench/sound_latency.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from playcast_testing.browser import CHROMIUM, CHROMIUM_ARGS
from playcast_testing.metrics import percentile
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from playwright.async_api import Browser, Page, async_playwright

TARGETS = {
    "first_frame_ms": 400.0,
    "tap_p50_ms": 25.0,
    "tap_p95_ms": 50.0,
    "sound_p50_ms": 60.0,
    "sound_p95_ms": 90.0,
    "av_offset_abs_p95_ms": 40.0,
}
CLICK_THRESHOLD = 0.25  # playcast.backends.audio.CLICK_THRESHOLD


# Run in the page once it plays: an AudioWorklet that reports the first loud
# sample after a quiet spell, as a page-clock time at the speaker.
SOUND_JS = """
async (threshold) => {
  const code = `
    class Click extends AudioWorkletProcessor {
      constructor() { super(); this.quiet = 0; }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (!ch) return true;
        for (let i = 0; i < ch.length; i++) {
          const v = Math.abs(ch[i]);
          if (v >= ${threshold}) {
            if (this.quiet > 4800) this.port.postMessage(currentTime + i / sampleRate);
            this.quiet = 0;
          } else this.quiet++;
        }
        return true;
      }
    }
    registerProcessor('click', Click);`;
  const track = document.querySelector('#stream').srcObject.getAudioTracks()[0];
  if (!track) return ['none', 0, 0]; // a worker run with --no-audio: picture only
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
  await ctx.audioWorklet.addModule(url);
  const node = new AudioWorkletNode(ctx, 'click');
  const mute = ctx.createGain();
  mute.gain.value = 0;
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  source.connect(node).connect(mute).connect(ctx.destination);
  node.port.onmessage = (e) => {
    const p = window.__bench.probe;
    if (!p || p.tapAt === null || p.heard !== null) return;
    const ts = ctx.getOutputTimestamp();
    p.heard = ts.performanceTime + (e.data - ts.contextTime) * 1000;
  };
  await ctx.resume();
  window.__bench.audio = ctx;
  return [ctx.state, ctx.baseLatency, ctx.outputLatency];
}
"""


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


AUDIO_INBOUND_JS = """
async () => {
  const report = await window.playcast.session.peer.getStats();
  let a = {};
  report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') a = s; });
  return {
    arrival_jitter_ms: a.jitter * 1000,
    jitter_buffer_ms: a.jitterBufferEmittedCount
      ? (a.jitterBufferDelay / a.jitterBufferEmittedCount) * 1000 : null,
    jitter_buffer_target_ms: a.jitterBufferEmittedCount
      ? (a.jitterBufferTargetDelay / a.jitterBufferEmittedCount) * 1000 : null,
    jitter_buffer_minimum_ms: a.jitterBufferEmittedCount
      ? (a.jitterBufferMinimumDelay / a.jitterBufferEmittedCount) * 1000 : null,
    packets_lost: a.packetsLost,
    concealed_samples: a.concealedSamples,
    total_samples: a.totalSamplesReceived,
  };
}
"""


@dataclass
class Results:
    width: int
    height: int
    fps_target: int
    first_frame_ms: list[float] = field(default_factory=list)
    tap_ms: list[float] = field(default_factory=list)
    tap_present_ms: list[float] = field(default_factory=list)
    tap_receive_ms: list[float] = field(default_factory=list)
    sound_ms: list[float] = field(default_factory=list)
    sound_speaker_ms: list[float] = field(default_factory=list)
    av_offset_ms: list[float] = field(default_factory=list)  # sound minus picture
    audio_base_latency_ms: float = float("nan")
    audio_output_latency_ms: float = float("nan")
    audio_inbound: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, str] = field(default_factory=dict)
    # The browser's very first session (codec and script caches cold): shown, not in the median.
    cold_first_frame_ms: float = float("nan")

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
            **self._sound_summary(),
        }

    def _sound_summary(self) -> dict[str, float]:
        if not self.sound_ms:
            return {}
        sound = sorted(self.sound_ms)
        offsets = sorted(self.av_offset_ms)
        return {
            "sound_p50_ms": percentile(sound, 50),
            "sound_p95_ms": percentile(sound, 95),
            "sound_max_ms": sound[-1],
            "sound_speaker_p50_ms": percentile(sorted(self.sound_speaker_ms), 50),
            "av_offset_p50_ms": percentile(offsets, 50),
            "av_offset_abs_p95_ms": percentile(sorted(abs(o) for o in offsets), 95),
            "audio_output_latency_ms": self.audio_output_latency_ms,
        }


def _tap_points(n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Spots on a grid, in shuffled order: a spot comes back only after 96 others,
    long after its disc (shown about 0.6 s) is gone."""
    cells = [(0.1 + 0.8 * (i % 8) / 7, 0.12 + 0.76 * (i // 8) / 11) for i in range(96)]
    rng.shuffle(cells)
    return [cells[i % len(cells)] for i in range(n)]


async def _picture_to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    left, top, width, height, vw, vh = await page.evaluate(
        """() => { const v = document.querySelector('#stream'); const r = v.getBoundingClientRect();
            return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight]; }"""
    )
    scale = min(width / vw, height / vh)
    pw, ph = vw * scale, vh * scale
    return left + (width - pw) / 2 + x * pw, top + (height - ph) / 2 + y * ph


async def _session(
    browser: Browser,
    server: ServerProcess,
    res: Results,
    taps: list[tuple[float, float]],
    rng: random.Random,
) -> None:
    """One player: Play to first frame, then ``taps`` taps, then Leave."""
    context = await browser.new_context(viewport={"width": res.width, "height": res.height})
    try:
        await context.add_init_script(PROBE_JS)
        page = await context.new_page()
        await page.goto(server.url)
        await page.click("#play")
        await page.wait_for_function("window.__bench.first !== null", timeout=60_000)
        first: dict[str, Any] = await page.evaluate(
            "({ at: window.__bench.playAt, frame: window.__bench.first })"
        )
        res.first_frame_ms.append(first["frame"]["expectedDisplayTime"] - first["at"])
        sound = False
        if taps:
            await page.wait_for_function(
                "document.body.dataset.state === 'connected'", timeout=60_000
            )
            await page.keyboard.press("F2")  # the stats overlay: read once at the end
            state, base, output = await page.evaluate(SOUND_JS, CLICK_THRESHOLD)
            assert state in ("running", "none"), state
            sound = state == "running"
            res.audio_base_latency_ms = base * 1000
            res.audio_output_latency_ms = output * 1000
        for x, y in taps:
            # A random phase against the frame clock, as a real player's would be.
            await asyncio.sleep(rng.uniform(0.04, 0.09))
            await page.evaluate(
                "([x, y]) => { window.__bench.probe ="
                " { x, y, tapAt: null, seen: null, heard: null }; }",
                [x, y],
            )
            await page.mouse.click(*await _picture_to_page(page, x, y))
            await page.wait_for_function(
                "s => window.__bench.probe.seen !== null"
                " && (!s || window.__bench.probe.heard !== null)",
                arg=sound,
                timeout=10_000,
            )
            probe: dict[str, Any] = await page.evaluate("window.__bench.probe")
            seen = probe["seen"]
            res.tap_ms.append(seen["expectedDisplayTime"] - probe["tapAt"])
            res.tap_present_ms.append(seen["presentationTime"] - probe["tapAt"])
            if seen.get("receiveTime"):
                res.tap_receive_ms.append(seen["receiveTime"] - probe["tapAt"])
            if not sound:
                continue
            ready = probe["heard"] - res.audio_output_latency_ms
            res.sound_ms.append(ready - probe["tapAt"])
            res.sound_speaker_ms.append(probe["heard"] - probe["tapAt"])
            res.av_offset_ms.append(ready - seen["expectedDisplayTime"])
        if taps:
            res.stats = await page.evaluate("window.playcast.stats.latest || {}")
            if sound:
                res.audio_inbound = await page.evaluate(AUDIO_INBOUND_JS)
        await page.click("#leave")
        await page.wait_for_function("document.body.dataset.state === 'ended'")
    finally:
        await context.close()


async def bench(args: argparse.Namespace) -> Results:
    rng = random.Random(1)
    res = Results(args.width, args.height, args.fps)
    size = ("--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps))
    async with (
        running_server(heartbeat_interval=1.0, heartbeat_timeout=10.0) as server,
        running_worker(server.ws_base, *size) as worker,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            mark, _ = await worker.wait_registered(timeout=60)
            # The first session warms the browser up; reported on its own.
            cold = Results(args.width, args.height, args.fps)
            await _session(browser, server, cold, [], rng)
            res.cold_first_frame_ms = cold.first_frame_ms[0]
            mark = await _next_registration(worker, mark)
            for n in range(args.joins):
                last = n == args.joins - 1
                await _session(
                    browser, server, res, _tap_points(args.taps, rng) if last else [], rng
                )
                mark = await _next_registration(worker, mark)
        finally:
            await browser.close()
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
    args = parser.parse_args()
    args.joins = 3 if args.quick else 10
    args.taps = 30 if args.quick else 100
    started = time.monotonic()
    res = asyncio.run(bench(args))
    summary = res.summary()
    print(f"browser latency, {res.width}x{res.height} @ {res.fps_target} fps, loopback, chromium")
    print(f"  sessions: {len(res.first_frame_ms)}, taps: {len(res.tap_ms)}")
    missed = []
    for key, value in summary.items():
        target = TARGETS.get(key)
        verdict = ""
        if target is not None:
            ok = value <= target
            verdict = f"  (target <= {target:g}: {'ok' if ok else 'MISSED'})"
            if not ok:
                missed.append(key)
        print(f"  {key:<20} {value:8.1f}{verdict}")
    if res.stats:
        print("  stats overlay: " + ", ".join(f"{k} {v}" for k, v in res.stats.items()))
    if res.audio_inbound:
        print("  audio inbound: " + ", ".join(f"{k} {v}" for k, v in res.audio_inbound.items()))
    if res.sound_ms:
        # Where tap-to-sound goes, on average: the rest is worker, network, decode.
        jitter = float(res.audio_inbound.get("jitter_buffer_ms") or "nan")
        mean = statistics.mean(res.sound_ms)
        framing = 10.0
        rest = mean - framing - jitter
        print(
            f"  sound, mean {mean:.1f} ms = framing ~{framing:.0f} + audio jitter buffer"
            f" {jitter:.1f} + worker/network/decode/Web Audio {rest:.1f}"
            f" (then the sound device: {res.audio_output_latency_ms:.1f})"
        )
    print(f"  took {time.monotonic() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "raw": asdict(res)}, f, indent=2)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
