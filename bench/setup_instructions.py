"""The signaling server's cost per session setup in instructions, which a
busy machine does not inflate (CPU time does: on the shared 2-core machine,
``signaling_load.py``'s CPU per setup moved by ±10 % from run to run).

The server runs under ``valgrind --tool=callgrind`` (instruction counts are
the same for the same binary, inputs and environment, whatever else runs);
this process drives ``--setups`` whole sessions through it one after the
other, each as a real worker and player do over loopback WebSockets
(register, join, assigned and session_start, offer, answer, two candidates
each way, both connected, leave, the worker's shutdown and ack), then stops
it. Two runs, with few and with many setups, and the difference divided by
the difference in setups is the cost of one setup, start-up and shutdown
left out. ``--src`` picks the checkout whose server is measured (an A/B of
two versions of the code in the same hour); ``--tickets`` runs the server
with ``--join-secret`` and every join carries its own fresh ticket (minted
here, outside the measured process).

    .venv/bin/python bench/setup_instructions.py [--src ../base/src] [--tickets]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

import aiohttp
import jwt

GAME = "com.supercell.clashroyale"
SECRET = "bench-secret-" + "x" * 32
CAND = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, object]:
    while True:
        msg = await ws.receive_json(timeout=60)
        if msg["type"] == "ping":
            await ws.send_json({"type": "pong", "ts": msg["ts"]})
        elif msg["type"] == kind:
            return dict(msg)


def ticket(n: int) -> str:
    now = int(time.time())
    claims = {"sub": f"p{n}", "game": GAME, "iat": now, "nbf": now, "exp": now + 300}
    return jwt.encode({**claims, "jti": f"j{n}-{now}"}, SECRET, algorithm="HS256")


async def one_setup(http: aiohttp.ClientSession, base: str, n: int, tickets: bool) -> None:
    worker = await http.ws_connect(f"{base}/ws/worker")
    await worker.send_json({"type": "register", "game": GAME})
    await _until(worker, "registered")
    client = await http.ws_connect(f"{base}/ws/client")
    join = {"type": "join", "game": GAME} | ({"ticket": ticket(n)} if tickets else {})
    await client.send_json(join)
    sid = (await _until(client, "assigned"))["session_id"]
    await _until(worker, "session_start")
    await worker.send_json({"type": "offer", "session_id": sid, "sdp": "v=0"})
    await _until(client, "offer")
    await client.send_json({"type": "answer", "session_id": sid, "sdp": "v=0"})
    await _until(worker, "answer")
    for a, b in ((worker, client), (client, worker)):
        for cand in (CAND, None):
            await a.send_json({"type": "ice_candidate", "session_id": sid, "candidate": cand})
            await _until(b, "ice_candidate")
    await worker.send_json({"type": "webrtc_connected", "session_id": sid})
    await client.send_json({"type": "webrtc_connected", "session_id": sid})
    await client.send_json({"type": "leave"})
    shutdown = await _until(worker, "shutdown")
    assert shutdown["reason"] == "client_left", shutdown
    await worker.send_json({"type": "shutdown_ack", "ok": True, "detail": ""})
    await worker.close()
    await client.close()


async def drive(port: int, setups: int, tickets: bool) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for n in range(setups):
            await one_setup(http, base, n, tickets)


def _read_log(lines: TextIO, ports: queue.Queue[int]) -> None:
    for line in lines:
        m = re.search(r"server_listening .*port=(\d+)", line)
        if m:
            ports.put(int(m.group(1)))


def instructions(src: str, setups: int, tickets: bool = False) -> int:
    """The server's instructions over a life with ``setups`` sessions."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PLAYCAST_")},
            "PYTHONPATH": src,
            "PYTHONHASHSEED": "0",
        }
        server = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                sys.executable, "-m", "playcast", "server", "--host", "127.0.0.1",
                "--port", "0", "--heartbeat-interval", "1000", "--heartbeat-timeout", "3000",
                "--hello-timeout", "1000", "--handshake-timeout", "1000",
                "--shutdown-ack-timeout", "1000",
                *(["--join-secret", SECRET] if tickets else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )  # fmt: skip
        assert server.stdout is not None
        ports: queue.Queue[int] = queue.Queue()
        # Its log read to the end: a pipe left full blocks the server's writes.
        threading.Thread(target=_read_log, args=(server.stdout, ports), daemon=True).start()
        asyncio.run(drive(ports.get(timeout=120), setups, tickets))
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=600)
        text = out.read_text()
    m = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
    assert m, "no totals in callgrind's output"
    return int(m.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--setups", type=int, default=120)
    parser.add_argument("--tickets", action="store_true", help="every join with a ticket")
    args = parser.parse_args()
    few = instructions(args.src, args.few, args.tickets)
    many = instructions(args.src, args.setups, args.tickets)
    per = (many - few) / (args.setups - args.few)
    what = " with tickets" if args.tickets else ""
    print(f"{args.src}{what}: {per / 1e6:.3f} M instructions a setup ({few} / {many} in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
