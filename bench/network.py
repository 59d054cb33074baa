"""A player on a real network (issue 24): play measured under loss, delay,
narrow links and outages, inside the page.

For each run (browser and codec: Chromium over H.264 and VP8, Firefox ESR over
VP8) and each scenario, starts a real server and one real synthetic worker
sending that codec only (the costly scene for the scenarios that need a stream
as dear as a real game's), and puts the impairment harness's UDP relay on the
media path between the worker and the player's page (testkit: relay.py, the
page's ICE candidates rewritten to the relay's; netem.py, the link model).
A session plays on a clean link first (``--warmup``: also the stream's clean
bit rate, for a cap at half of it), then the scenario's impairment applies for
``--duration`` seconds, both ways, its schedule counted from that moment.

Measured inside the page, on its own clock, over the impaired window:

- frames/s and the longest gap between presented frames (every frame's
  ``expectedDisplayTime`` from ``requestVideoFrameCallback``);
- freezes: the browser's own (W3C ``freezeCount``, ``totalFreezesDuration``;
  Chromium only), and ours from the frames, by the same rule (a frame shown
  over max(3 frame times, one + 150 ms)) but counting a picture still frozen
  at the window's end, which the browser never counts;
- what reached the page (its selected candidate pair's ``bytesReceived``)
  against the cap; video packets lost, NACKs and PLIs it sent (getStats);
- tap to photon p50/p95 (browser_latency.py's method: a tap on the video, the
  first frame whose pixels show the synthetic game's white disc there, read
  back through a canvas), one tap every ~1.2 s; a tap whose disc does not show
  within 3 s is counted as missed;
- after each outage, the time from the link's return to a moving picture (the
  first frame that the next follows within the freeze threshold);
- the page's state at the end (``connected``, or how the session ended).

And by the relay: what the worker sent into the link (its bit rate over the
window, and its highest over any 5 s, over the whole window and from its 5th
second on, against the link's capacity: the issue's "no storm" rule is for a
session past its first 5 s) and what the link delivered; under a cap, how
soon the worker sent under it (the first whole second at or under it); under
a capacity schedule, how soon it came down after a drop and back to 80 % of
its clean rate after a rise. The worker's CPU over the window is its
process's user + system time.

    .venv/bin/python bench/network.py                       # every scenario, 20 s each
    .venv/bin/python bench/network.py --quick               # CI: three scenarios, Chromium H.264
    .venv/bin/python bench/network.py --scenario cap1m,outages --runs firefox:VP8
    .venv/bin/python bench/network.py --scenario rfc8867-5.1 --duration 100   # any preset
    .venv/bin/python bench/network.py --markdown            # the table as docs/network.md has it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from browser_latency import OPENERS, Opener, Player, _picture_to_page, _tap_points
from playcast_testing.metrics import percentile
from playcast_testing.netem import Capacity, Impairment, LinkConfig
from playcast_testing.netem_presets import MBIT, PRESETS, RFC8867_SECONDS
from playcast_testing.page_media import (
    FRAMES_FROM_JS,
    FRAMES_JS,
    STATS_JS,
    Presented,
    freeze_threshold,
    stats_delta,
)
from playcast_testing.relay import UdpRelay, bins, frames_sent, peak_rate, rate
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker

LOAD_BEFORE = os.getloadavg()
QUEUE_MS = 100.0  # the issue's capped rows
TAP_TIMEOUT = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    # (window seconds, the stream's clean bit/s) -> what the link does
    make: Callable[[float, float], Impairment]
    costly: bool = False  # the costly synthetic scene, not the arena
    firefox: bool = False  # in Firefox's default run
    # The link is this way from the Play click (False: clean for --warmup
    # seconds, then it changes, like a link that degrades mid-session).
    from_start: bool = True


def _both(name: str, **kw: Any) -> Callable[[float, float], Impairment]:
    return lambda _d, _r: Impairment.both(name, LinkConfig(**kw))


def _capped(name: str, bps: float) -> Callable[[float, float], Impairment]:
    cap = LinkConfig(capacity=Capacity.constant(bps), queue_ms=QUEUE_MS)
    return lambda _d, _r: Impairment.both(name, cap)


def _outages(duration: float, _rate: float) -> Impairment:
    # A 1 s outage every 5 s from 2 s on, each followed by at least 2 s of link.
    starts = [2.0 + 5 * i for i in range(max(1, int((duration - 5) // 5) + 1))]
    return Impairment("outages").with_outages(*((s, 1.0) for s in starts))


def _half(_duration: float, clean: float) -> Impairment:
    cap = LinkConfig(capacity=Capacity.constant(clean / 2), queue_ms=QUEUE_MS)
    return Impairment("halfcap", down=cap, up=LinkConfig())


def _steps(duration: float, _rate: float) -> Impairment:
    third = duration / 3
    steps = Capacity(((0.0, 6 * MBIT), (third, 1.5 * MBIT), (2 * third, 6 * MBIT)))
    return Impairment("steps", down=LinkConfig(capacity=steps, queue_ms=QUEUE_MS))


def _preset(name: str) -> Callable[[float, float], Impairment]:
    def make(duration: float, _rate: float) -> Impairment:
        p = PRESETS[name]
        length = RFC8867_SECONDS.get(name)
        return p.stretched(duration / length) if length else p

    return make


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("clean", "clean", lambda _d, _r: Impairment("clean")),
        Scenario("loss1", "1 % loss, 40 ms round trip", _both("loss1", delay=0.020, loss=0.01)),
        Scenario("loss5", "5 % loss, 40 ms round trip", _both("loss5", delay=0.020, loss=0.05)),
        Scenario("outages", "a 1 s outage every 5 s", _outages, firefox=True),
        Scenario("cap1m", "1 Mbit/s cap, 100 ms queue", _capped("cap1m", MBIT), firefox=True),
        Scenario(
            "cap500k", "500 kbit/s cap, 100 ms queue", _capped("cap500k", MBIT / 2), firefox=True
        ),
        Scenario("verybad", '"very bad": 10 % loss, 250 ms one way, 1 Mbit/s', _preset("very-bad")),
        Scenario("costly", "costly scene, clean", lambda _d, _r: Impairment("clean"), costly=True),
        Scenario(
            "halfcap", "costly scene, cap at half its rate", _half, costly=True, from_start=False
        ),
        Scenario(
            "steps", "costly scene, 6 -> 1.5 -> 6 Mbit/s", _steps, costly=True, from_start=False
        ),
    )
}


def scenario(name: str) -> Scenario:
    if name in SCENARIOS:
        return SCENARIOS[name]
    if name in PRESETS:
        return Scenario(name, PRESETS[name].note or name, _preset(name))
    raise SystemExit(f"no scenario {name!r}: have {', '.join([*SCENARIOS, *PRESETS])}")


@dataclass
class Row:
    scenario: str
    run: str
    seconds: float
    fps: float = 0.0
    fps_after5: float = 0.0  # from the window's 5th second on: once settled
    worker_fps: float = 0.0  # frames the worker sent (the relay's count)
    longest_gap: float = 0.0
    frozen_per_min: float = 0.0
    frozen_after5: float = 0.0  # s/min from the window's 5th second on
    freezes: int = 0
    w3c_freezes: float | None = None
    w3c_frozen: float | None = None
    received_mbps: float = 0.0
    cap_mbps: float | None = None
    relay_delivered_mbps: float = 0.0
    sent_mbps: float = 0.0
    sent_peak5_mbps: float = 0.0
    sent_peak5_after5_mbps: float = 0.0  # from the window's 5th second on
    under_cap_s: float | None = None  # the first whole second sent at or under the cap
    # Capacity steps: seconds from a drop to a second sent under the new
    # capacity, and from a rise to a second at 80 % of the clean rate.
    down_s: float | None = None
    back_s: float | None = None
    clean_mbps: float = 0.0
    loss_pct: float = 0.0
    nacks: float = 0.0
    plis: float = 0.0
    taps: list[float] = field(default_factory=list)
    taps_missed: int = 0
    recoveries: list[float | None] = field(default_factory=list)
    state: str = ""
    ice: str = ""
    worker_cpu_pct: float = math.nan
    codec: str = ""
    # For a capacity schedule, each step: (capacity, frames/s, delivered, sent), Mbit/s.
    steps: list[tuple[float, float, float, float]] = field(default_factory=list)

    def tap(self, p: float) -> float:
        return percentile(sorted(self.taps), p) if self.taps else math.nan


async def _wait(page: Player, expression: str, timeout: float) -> bool:
    try:
        await page.wait_for(expression, timeout)
    except Exception:
        return False
    return True


async def _tapper(page: Player, row: Row, rng: random.Random) -> None:
    """Tap the video every ~1.2 s; each tap's disc has 3 s to show."""
    for x, y in _tap_points(1000, rng):
        await asyncio.sleep(rng.uniform(0.3, 0.6))  # a player's own pace, off the frame clock
        if not await page.evaluate("document.querySelector('#stream').videoWidth > 0"):
            row.taps_missed += 1  # no picture yet to tap on
            continue
        await page.evaluate(f"window.__bench.probe = {{ x: {x}, y: {y}, tapAt: null, seen: null }}")
        await page.click(*await _picture_to_page(page, x, y))
        if await _wait(page, "window.__bench.probe.seen !== null", TAP_TIMEOUT):
            probe = await page.evaluate("window.__bench.probe")
            row.taps.append(probe["seen"]["expectedDisplayTime"] - probe["tapAt"])
        else:
            row.taps_missed += 1
        await asyncio.sleep(rng.uniform(0.3, 0.6))


async def session(
    open_page: Opener,
    server: ServerProcess,
    worker: WorkerProcess,
    sc: Scenario,
    run: str,
    args: argparse.Namespace,
    rng: random.Random,
) -> Row:
    row = Row(sc.name, run, args.duration)
    # A player whose link is bad from the start has it for the handshake and the
    # first keyframe too; its schedule (outages, capacity steps) starts with the window.
    impairment = sc.make(args.duration, 0.0) if sc.from_start else Impairment("clean")
    relay = UdpRelay(impairment.without_outages(), seed=rng.randrange(1 << 30))
    await relay.start()
    page = await open_page(server.url, args.width, args.height, relay.page_script() + FRAMES_JS)
    try:
        await page.click_element("#play")
        if not await _wait(page, "document.body.dataset.state === 'connected'", 60):
            row.state = await page.evaluate("document.body.dataset.state")
            return row
        if not sc.from_start:
            # A link that changes mid-session: first the stream on a clean one.
            warm = relay.now
            await asyncio.sleep(args.warmup)  # the clean stretch: nothing to wait for but time
            clean = rate(relay.down.offered, warm + 1.0, relay.now)
            row.clean_mbps = clean / MBIT
            impairment = sc.make(args.duration, clean)
        start = relay.impair(impairment)
        capacity = impairment.down.capacity
        if capacity is not None and len(capacity.steps) == 1:
            row.cap_mbps = capacity.steps[0][1] / MBIT
        before = await page.evaluate(STATS_JS)
        proc = psutil.Process(worker.proc.pid)
        cpu_before = proc.cpu_times()
        tapper = asyncio.create_task(_tapper(page, row, rng))
        try:
            await asyncio.sleep(start + args.duration - relay.now)  # the measuring window
        finally:
            tapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tapper
        end = relay.now
        cpu_after = proc.cpu_times()
        after = await page.evaluate(STATS_JS)
        frames: list[float] = await page.evaluate(FRAMES_FROM_JS + "(0)")
        _fill(row, relay, start, end, before, after, frames, args.fps)
        pt = video_payload_type(await page.evaluate("window.__relay.offers[0] || ''"))
        row.worker_fps = frames_sent(relay.down.offered, pt, start, end) / (end - start)
        used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        row.worker_cpu_pct = 100 * used / (end - start)
        if row.state == "connected":
            await page.click_element("#leave")
            await _wait(page, "document.body.dataset.state === 'ended'", 30)
    finally:
        await page.close()
        await relay.close()
    return row


def video_payload_type(offer: str) -> int:
    """The video codec's RTP payload type in the worker's offer (-1: none)."""
    m = re.search(r"a=rtpmap:(\d+) (?:H264|VP8)/90000", offer)
    return int(m.group(1)) if m else -1


def _fill(
    row: Row,
    relay: UdpRelay,
    start: float,
    end: float,
    before: dict[str, Any],
    after: dict[str, Any],
    frames: list[float],
    fps: int,
) -> None:
    shown = Presented.window(frames, relay.wall(start), relay.wall(end), freeze_threshold(fps))
    row.fps = shown.fps
    settled = Presented.window(frames, shown.start + 5.0, shown.end, shown.threshold)
    row.fps_after5 = settled.fps
    row.frozen_after5 = settled.frozen_per_minute
    row.longest_gap = shown.longest_gap
    row.freezes, _ = shown.freezes()
    row.frozen_per_min = shown.frozen_per_minute
    if after["video"].get("freezeCount") is not None:
        row.w3c_freezes = stats_delta(before, after, "freezeCount")
        row.w3c_frozen = stats_delta(before, after, "totalFreezesDuration")
    got = (after["pair"]["bytesReceived"] or 0) - (before["pair"]["bytesReceived"] or 0)
    row.received_mbps = 8 * got / (after["at"] - before["at"]) / MBIT
    row.relay_delivered_mbps = rate(relay.down.delivered, start, end) / MBIT
    row.sent_mbps = rate(relay.down.offered, start, end) / MBIT
    row.sent_peak5_mbps = peak_rate(relay.down.offered, start, end, 5.0) / MBIT
    row.sent_peak5_after5_mbps = peak_rate(relay.down.offered, start + 5.0, end, 5.0) / MBIT
    lost = stats_delta(before, after, "packetsLost")
    received = stats_delta(before, after, "packetsReceived")
    row.loss_pct = 100 * lost / (lost + received) if lost + received > 0 else 0.0
    row.nacks = stats_delta(before, after, "nackCount")
    row.plis = stats_delta(before, after, "pliCount")
    row.state, row.ice, row.codec = after["state"], after["ice"], after["codec"] or ""
    capacity = relay.down.link.config.capacity
    per_second = [8 * b / MBIT for b in bins(relay.down.offered, start, end, 1.0)]
    if row.cap_mbps is not None:
        row.under_cap_s = next(
            (float(i + 1) for i, r in enumerate(per_second) if r <= row.cap_mbps), None
        )
    if capacity is not None and len(capacity.steps) > 1:
        row.down_s, row.back_s = _step_times(capacity.steps, per_second, row.clean_mbps)
        edges = [min(start + t, end) for t, _ in capacity.steps] + [end]
        for (_, bps), a, b in zip(capacity.steps, edges, edges[1:], strict=False):
            if b <= a:
                continue  # a step the window never reached
            part = Presented.window(frames, relay.wall(a), relay.wall(b), shown.threshold)
            row.steps.append(
                (
                    bps / MBIT,
                    part.fps,
                    rate(relay.down.delivered, a, b) / MBIT,
                    rate(relay.down.offered, a, b) / MBIT,
                )
            )
    for _, outage_end in relay.down.link.outages():
        if outage_end <= end:
            row.recoveries.append(shown.back_after(relay.wall(outage_end)))


def _step_times(
    steps: tuple[tuple[float, float], ...], per_second: list[float], clean: float
) -> tuple[float | None, float | None]:
    """Seconds from the first drop to a second sent under the new capacity, and
    from the next rise to a second sent at 80 % of the clean rate."""
    down = back = None
    for (_, before), (at, bps) in itertools.pairwise(steps):
        tail = per_second[int(at) :]
        if bps < before and down is None:
            down = next((i + 1.0 for i, r in enumerate(tail) if r <= bps / MBIT), None)
        elif bps > before and down is not None and back is None:
            back = next((i + 1.0 for i, r in enumerate(tail) if r >= 0.8 * clean), None)
    return down, back


async def bench(args: argparse.Namespace, browser: str, codec: str, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    rng = random.Random(24)
    async with (
        running_server(heartbeat_interval=1.0, heartbeat_timeout=10.0) as server,
        OPENERS[browser]() as (name, open_page),
    ):
        run = f"{name.split()[0]} {codec}"
        for costly in (False, True):
            wanted = [scenario(n) for n in names if scenario(n).costly == costly]
            if not wanted:
                continue
            flags = ["--codecs", codec, "--fps", str(args.fps), *args.worker_arg]
            flags += ["--width", str(args.width), "--height", str(args.height)]
            if costly:
                flags += ["--synthetic-scene", "costly"]
            async with running_worker(server.ws_base, *flags) as worker:
                mark, _ = await worker.wait_registered(timeout=60)
                for sc in wanted:
                    row = await session(open_page, server, worker, sc, run, args, rng)
                    rows.append(row)
                    print(_line(row), flush=True)
                    mark, _ = await worker.wait_registered(after=mark + 1, timeout=60)
    return rows


NONE = "\N{EN DASH}"


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return NONE if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _recovery(row: Row) -> str:
    if not row.recoveries:
        return NONE
    got = sorted(r for r in row.recoveries if r is not None)
    never = len(row.recoveries) - len(got)
    text = f"{1000 * statistics.median(got):.0f} / {1000 * got[-1]:.0f} ms" if got else "never"
    return text + (f" ({never} never)" if never and got else "")


def _line(row: Row) -> str:
    return (
        f"  {row.scenario:<9} {row.run:<14} {row.fps:5.1f} fps ({row.fps_after5:4.1f},"
        f" sent {row.worker_fps:4.1f})"
        f"  gap {row.longest_gap:5.2f} s"
        f"  frozen {row.frozen_per_min:5.1f} s/min ({row.frozen_after5:.1f} from 5 s)"
        f"  recv {row.received_mbps:5.2f}"
        f" (cap {_fmt(row.cap_mbps, '.2f')})  sent {row.sent_mbps:5.2f}"
        f" peak5 {row.sent_peak5_mbps:5.2f} ({row.sent_peak5_after5_mbps:.2f} from 5 s)"
        f"{f'  under cap after {row.under_cap_s:.0f} s' if row.under_cap_s else ''}"
        f"{f'  down {row.down_s:.0f} s' if row.down_s else ''}"
        f"{f' back {row.back_s:.0f} s' if row.back_s else ''}"
        f"  loss {row.loss_pct:4.1f} %  nack {row.nacks:.0f} pli {row.plis:.0f}"
        f"  tap {_fmt(row.tap(50), '.0f')}/{_fmt(row.tap(95), '.0f')} ms ({row.taps_missed} missed)"
        f"  back {_recovery(row)}  {row.state}  cpu {row.worker_cpu_pct:.0f} %"
        + "".join(
            f"\n    step {cap:.2f} Mbit/s: {fps:.1f} fps, delivered {got:.2f}, sent {sent:.2f}"
            for cap, fps, got, sent in row.steps
        )
    )


MD_HEADER = (
    "| scenario | run | frames/s (after 5 s; worker sent) | longest gap |"
    " frozen s/min (ours; after 5 s) |"
    " W3C freezes (s) |"
    " received / cap Mbit/s | worker sent (peak 5 s; from 5 s) Mbit/s | loss | NACK / PLI |"
    " tap→photon p50 / p95 (missed) | outage→picture p50 / max | end state | worker CPU |"
)


def _markdown(rows: list[Row]) -> list[str]:
    out = [MD_HEADER, "|" + " --- |" * MD_HEADER.count(" |")]
    for r in rows:
        w3c = NONE if r.w3c_freezes is None else f"{r.w3c_freezes:.0f} ({_fmt(r.w3c_frozen)} s)"
        out.append(
            f"| {SCENARIOS[r.scenario].title if r.scenario in SCENARIOS else r.scenario}"
            f" | {r.run} | {r.fps:.1f} ({r.fps_after5:.1f}; {r.worker_fps:.0f})"
            f" | {r.longest_gap:.2f} s"
            f" | {r.frozen_per_min:.1f} ({r.frozen_after5:.1f}) | {w3c}"
            f" | {r.received_mbps:.2f} / {_fmt(r.cap_mbps, '.2f')}"
            f" | {r.sent_mbps:.2f} ({r.sent_peak5_mbps:.2f}; {r.sent_peak5_after5_mbps:.2f})"
            f" | {r.loss_pct:.1f} %"
            f" | {r.nacks:.0f} / {r.plis:.0f}"
            f" | {_fmt(r.tap(50), '.0f')} / {_fmt(r.tap(95), '.0f')} ms ({r.taps_missed})"
            f" | {_recovery(r)} | {r.state} | {r.worker_cpu_pct:.0f} % |"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI: 3 scenarios, 6 s, Chromium H.264")
    parser.add_argument(
        "--scenario", help=f"comma-separated (default: all of {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--runs", default="chromium:H264,chromium:VP8,firefox:VP8")
    parser.add_argument("--duration", type=float, help="impaired seconds per scenario (20)")
    parser.add_argument("--warmup", type=float, help="clean seconds first (3)")
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=1280)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--worker-arg", action="append", default=[], help="one more worker flag")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    args.duration = args.duration or (6.0 if args.quick else 20.0)
    args.warmup = args.warmup or (2.0 if args.quick else 3.0)
    if args.quick:
        args.runs = "chromium:H264"
    explicit = args.scenario is not None
    names = (
        args.scenario.split(",")
        if explicit
        else (["clean", "outages", "cap500k"] if args.quick else list(SCENARIOS))
    )
    for n in names:
        scenario(n)
    started = time.monotonic()
    print(f"network, {args.width}x{args.height} @ {args.fps} fps, {args.duration:g} s a scenario")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in LOAD_BEFORE)}")
    rows: list[Row] = []
    for run in args.runs.split(","):
        browser, _, codec = run.partition(":")
        if browser not in OPENERS or not codec:
            parser.error(f"bad run {run!r}: want browser:codec, browser in {', '.join(OPENERS)}")
        mine = (
            names if explicit or browser != "firefox" else [n for n in names if scenario(n).firefox]
        )
        rows += asyncio.run(bench(args, browser, codec.upper(), mine))
    if args.markdown:
        print("\n".join(_markdown(rows)))
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  took {time.monotonic() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
    ended = [r for r in rows if r.state != "connected"]
    for r in ended:
        print(f"  ENDED: {r.scenario} {r.run}: the page is {r.state!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
