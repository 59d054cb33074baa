"""Which modules a player's ``answer`` runs through on one node: socket bytes
in to the worker's socket bytes out (issue 23's target: at most five).

A real server in this process, a real worker and player over real loopback
WebSockets (aiohttp's client); the handshake up to the offer, then a profiler
records every Python function of ``playcast.signaling`` that runs from the
moment the player's answer is sent until the worker has read it. Printed:
the modules in the order they are first entered, and the hops between
modules (a return to a module already on the path counts as a hop too).

    .venv/bin/python tools/answer_path.py
"""

from __future__ import annotations

import asyncio
import json
import sys
from types import FrameType
from typing import Any

import aiohttp

from playcast.signaling.main import start_server
from playcast.signaling.rules.settings import Settings

GAME = "com.supercell.clashroyale"


async def trace() -> tuple[list[str], list[str]]:
    settings = Settings(host="127.0.0.1", port=0, heartbeat_interval=1000.0)
    server = await start_server(settings)
    url = f"ws://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        worker = await http.ws_connect(url + "/ws/worker")
        await worker.send_json({"type": "register", "game": GAME})
        await _until(worker, "registered")
        client = await http.ws_connect(url + "/ws/client")
        await client.send_json({"type": "join", "game": GAME})
        assigned = await _until(client, "assigned")
        sid = assigned["session_id"]
        await _until(worker, "session_start")
        await worker.send_json({"type": "offer", "session_id": sid, "sdp": "v=0"})
        await _until(client, "offer")
        hops: list[str] = []

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event != "call":
                return
            name = frame.f_globals.get("__name__", "")
            if name.startswith("playcast.signaling") and (not hops or hops[-1] != name):
                hops.append(name)

        sys.setprofile(profile)
        try:
            await client.send_json({"type": "answer", "session_id": sid, "sdp": "v=0"})
            await _until(worker, "answer")
        finally:
            sys.setprofile(None)
        await worker.close()
        await client.close()
    await server.close()
    first = list(dict.fromkeys(hops))
    return first, hops


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended waiting for {kind}: {msg!r}")
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] == kind:
                return data


def main() -> int:
    modules, hops = asyncio.run(trace())
    short = [m.removeprefix("playcast.signaling.") for m in modules]
    print(f"modules: {len(modules)}: {' , '.join(short)}")
    print(
        f"hops: {len(hops) - 1}: {' -> '.join(h.removeprefix('playcast.signaling.') for h in hops)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
