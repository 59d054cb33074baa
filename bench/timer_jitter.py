#!/usr/bin/env python3
"""How far a sleep of a few milliseconds ends from when it was asked to, on
the node's loop (uvloop): asyncio's sleep against the cluster link's
``PreciseSleep`` (Linux's timerfd). A node's gathering window is 3 to 4 ms,
and each crossing of the cluster waits for it.

Each sleep asks for a wait drawn from 0.5 to 3.5 ms (as the outbound loop
does: what is left of the window); the figure is the error, ended minus
asked, in ms (negative: it ended early).

    .venv/bin/python bench/timer_jitter.py           # 2,000 sleeps each
    .venv/bin/python bench/timer_jitter.py --quick   # 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from playcast.signaling.cluster.precise_sleep import PreciseSleep


def _q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def errors(sleep: Callable[[float], Awaitable[None]], n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        asked = rng.uniform(0.0005, 0.0035)
        t0 = time.monotonic()
        await sleep(asked)
        out.append((time.monotonic() - t0 - asked) * 1000.0)
    return out


async def main(n: int) -> None:
    precise = PreciseSleep()
    try:
        rows = {
            "asyncio.sleep": await errors(asyncio.sleep, n, 1),
            "PreciseSleep": await errors(precise.sleep, n, 1),
        }
    finally:
        precise.close()
    loop = type(asyncio.get_running_loop()).__module__
    print(f"{n} sleeps each of 0.5-3.5 ms on {loop}; ended minus asked, ms:")
    for name, xs in rows.items():
        early = sum(1 for x in xs if x < 0) / len(xs) * 100
        print(
            f"  {name:14} p1 {_q(xs, 1):+.3f}  p50 {_q(xs, 50):+.3f}  p99 {_q(xs, 99):+.3f}  "
            f"max {max(xs):+.3f}  ended early {early:.0f} %"
        )
    if not precise.precise:
        print("  (no timerfd here: PreciseSleep fell back to asyncio.sleep)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 sleeps each")
    ap.add_argument("--sleeps", type=int, default=2000)
    args = ap.parse_args()
    try:
        import uvloop

        runner: Callable[..., object] = uvloop.run
    except ImportError:  # the node falls back to asyncio's loop too
        runner = asyncio.run
    runner(main(200 if args.quick else args.sleeps))
