"""The phone's ladder of encodings (issue 24): what one rung's change costs the
player, with the fake phone (real adb subprocesses, real sockets, real H.264
at each rung's bit rate and size).

The Android backend restarts the phone's video on a new scrcpy server beside
the running one, which keeps sending until the new one's first keyframe. For
each change, measured where the worker takes the pictures (the backend's
``packets()``):

- **gap**: from the last picture of the old server to the first of the new,
  the time the player goes without a new frame (the issue's target: at most
  1 s);
- **start**: from the ladder's decision to that first picture (the new
  server's start-up, hidden behind the old one's pictures).

    .venv/bin/python bench/phone_ladder.py               # 10 changes
    .venv/bin/python bench/phone_ladder.py --changes 20
    .venv/bin/python bench/phone_ladder.py --quick       # CI: 2 changes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playcast_testing.fake_device import FAKE_ADB, FakeDevice
from playcast_testing.metrics import percentile

from playcast.backends.android import AndroidBackend, AndroidSettings
from playcast.backends.base import VideoPacket
from playcast.backends.scrcpy import SCRCPY_VERSION


async def run(changes: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        jar = Path(tmp) / f"scrcpy-server-v{SCRCPY_VERSION}"
        jar.write_bytes(b"PK\x03\x04 not really a jar")
        async with FakeDevice(serial="bench-ladder", screen=(720, 1280), fps=30) as phone:
            os.environ["PATH"] = f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}"
            os.environ.update(phone.env())
            settings = AndroidSettings(
                scrcpy_server=str(jar),
                serial="bench-ladder",
                max_size=1280,
                video_bit_rate=2_000_000,
                ladder_down=0.2,
                ladder_up=0.5,
            )
            backend = AndroidBackend(settings)
            await backend.start()
            pictures: list[tuple[float, VideoPacket]] = []

            async def read() -> None:
                async for video in backend.packets():
                    pictures.append((time.monotonic(), video))

            reader = asyncio.create_task(read())
            starts: list[float] = []
            try:
                await asyncio.sleep(3.0)  # the top rung's rate measured
                low = backend.rungs[-1].bit_rate // 2
                for i in range(changes):
                    target = low if i % 2 == 0 else 10 * settings.video_bit_rate
                    done = len(backend.switches) + 1
                    began = time.monotonic()
                    while len(backend.switches) < done:
                        backend.set_target_bitrate(target)  # as the worker does each tick
                        await asyncio.sleep(0.1)
                    starts.append(time.monotonic() - began - settings.ladder_down)
                    await asyncio.sleep(2.5)  # the new rung's rate measured
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await backend.stop()
            return list(backend.switches), starts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="CI: two changes")
    args = parser.parse_args()
    if args.quick:
        args.changes = 2
    load = os.getloadavg()
    gaps, starts = asyncio.run(run(args.changes))
    ms = sorted(1000 * g for g in gaps)
    print(f"phone ladder, fake phone 720x1280 @ 30 fps, {len(ms)} rung changes")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in load)}")
    print(
        f"  gap without a new picture: p50 {statistics.median(ms):.0f} ms,"
        f" p95 {percentile(ms, 95):.0f} ms, max {ms[-1]:.0f} ms"
    )
    print(
        f"  decision to the new rung's first picture: p50 {1000 * statistics.median(starts):.0f}"
        f" ms, max {1000 * max(starts):.0f} ms (up to 0.1 s of it the bench's own tick)"
    )
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
