"""``playcast demo``: a server and two synthetic workers on this machine, one command.

Each runs as its own child process, exactly as it would in production, so
the demo shows the real system; Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import aiohttp

from playcast.envflags import add_flag

STOP_GRACE = 15.0  # the server drains sessions (shutdown, acks) before it exits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--host", default="127.0.0.1", help="address the server listens on")
    add_flag(parser, "--port", type=int, default=8080, help="server port")
    add_flag(parser, "--workers", type=int, default=2, help="synthetic workers to start")
    add_flag(parser, "--fps", type=int, default=30, help="synthetic frame rate")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "playcast", *argv)


async def _wait_healthy(url: str, server: asyncio.subprocess.Process) -> bool:
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while server.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "healthz") as r:
                    if r.status == 200:
                        return True
            await asyncio.sleep(0.1)  # the child has no other way to say it is up
    return False


async def _demo(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url = f"http://{local}:{args.port}/"
    children: list[asyncio.subprocess.Process] = []
    code = 0
    try:
        server = await _spawn("server", "--host", args.host, "--port", str(args.port))
        children.append(server)
        if not await _wait_healthy(url, server):
            print(f"playcast demo: the server did not come up on {url}", file=sys.stderr)
            return 1
        for _ in range(args.workers):
            children.append(
                await _spawn(
                    "worker",
                    "--server",
                    f"ws://{local}:{args.port}",
                    "--backend",
                    "synthetic",
                    "--fps",
                    str(args.fps),
                )
            )
        print(f"Playcast demo running: open {url} (Ctrl-C stops it)", flush=True)
        exits = [asyncio.ensure_future(p.wait()) for p in children]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            print("playcast demo: a child process exited; stopping the rest", file=sys.stderr)
            code = 1
        stopping.cancel()
    finally:
        await _stop_all(children)
    print("Playcast demo stopped", flush=True)
    return code


async def _stop_all(children: list[asyncio.subprocess.Process]) -> None:
    # Workers first, so the server's drain does not send them reconnecting.
    for group in (children[1:], children[:1]):
        for p in group:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in group:
            try:
                await asyncio.wait_for(p.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
