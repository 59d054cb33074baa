"""The whole cluster's status, for /api/status: every live node's snapshot,
merged, and with ``check`` the invariants only the shared state can tell.

A node asks the others on the bus (``bus.Snap``); each pushes its snapshot
onto a reply list in Redis, which the asker reads for a second at most.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from playcast.signaling.rules import bus


async def answer(redis: Redis, doc: dict[str, Any], reply: str) -> None:
    """Push this node's snapshot for the node that asked."""
    with contextlib.suppress(RedisError, OSError):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reply, json.dumps(doc))
            # The asker waits a second at most: an answer later than that
            # is never read, and must not outlive it by much.
            pipe.expire(reply, 3)
            await pipe.execute()


async def gather(
    redis: Redis,
    node: str,
    mine: Callable[[], Any],
    control: Callable[[str, bytes], bytes],
    wait_cap: float,
    check: bool,
) -> dict[str, Any]:
    """Every live node's snapshot, merged; with ``check``, the invariants of
    each node and of the shared state, cluster-wide. ``mine``: this node's
    snapshot, once what it queued is written (awaitable); ``control``: a bus
    control entry for a node."""
    nodes = sorted(text(m) for m in await redis.smembers("pc:nodes"))
    others = [n for n in nodes if n != node]
    reply = f"pc:reply:{secrets.token_hex(8)}"
    if others:
        ask = bus.pack([bus.Snap(reply=reply)])
        async with redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.publish(f"pc:bus:{other}", control(other, ask))
            await pipe.execute()
    docs = [await mine()]
    deadline = time.monotonic() + 1.0
    while len(docs) < len(others) + 1:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Each wait well within the client's socket timeout: a node that
        # does not answer is reported missing, not taken for Redis failing.
        got = await redis.blpop([reply], timeout=max(0.01, min(left, wait_cap)))
        if got is not None:
            docs.append(json.loads(got[1]))
    await redis.delete(reply)
    merged = merge(docs)
    merged["nodes"] = [
        {"id": d["node"], "workers": len(d["workers"]), "clients": len(d["clients"])} for d in docs
    ]
    missing = sorted(set(others) - {d["node"] for d in docs})
    if missing:
        merged["unanswered_nodes"] = missing
    if check:
        merged["violations"] = [
            f"{d['node']}: {v}" for d in docs for v in d.get("violations", [])
        ] + await check_shared(redis, docs)
    return merged


async def check_shared(redis: Redis, docs: list[dict[str, Any]]) -> list[str]:
    """The invariants only the shared state can tell."""
    out: list[str] = []
    live_workers = {w["id"]: w for d in docs for w in d["workers"]}
    live_clients = {c["id"] for d in docs for c in d["clients"]}
    in_session: dict[str, str] = {}
    paired_clients: set[str] = set()
    async for key in redis.scan_iter(match="pc:s:*", count=500):
        s = {text(k): text(v) for k, v in (await redis.hgetall(key)).items()}
        sid = text(key)[5:]
        if not s:
            continue
        if s["worker"] in in_session:
            out.append(f"worker {s['worker']} in two sessions: {in_session[s['worker']]}, {sid}")
        in_session[s["worker"]] = sid
        paired_clients.add(s["client"])
        if s["worker"] not in live_workers or s["client"] not in live_clients:
            out.append(f"session {sid} has a member that is gone")
    async for key in redis.scan_iter(match="pc:w:*", count=500):
        wid = text(key)[5:]
        if wid not in live_workers:
            out.append(f"ghost in the directory: worker {wid}")
    held = {text(name) for name in await redis.smembers("pc:holds")}
    pooled: set[str] = set()
    async for key in redis.scan_iter(match="pc:pool:*", count=500):
        for raw in await redis.zrange(key, 0, -1):
            wid = text(raw)
            pooled.add(wid)
            w = live_workers.get(wid)
            if wid in in_session or (w is not None and w["status"] in ("busy", "held")):
                out.append(f"worker {wid} in the pool while busy or held")
            elif w is None:
                out.append(f"pool holds {wid}, which is gone")
            if w is not None and w.get("name") in held:
                out.append(f"worker {wid} in the pool though its name is held")
    # What a node holds ready must be where the others can find it (a
    # pairing on its way is in a session record; a hold on its way, in the
    # set of held names).
    for wid, w in live_workers.items():
        listed = w["status"] == "available" and w.get("registered", True)
        if listed and wid not in pooled and wid not in in_session and w.get("name") not in held:
            out.append(f"worker {wid} is available but in no pool")
    lined: set[str] = set()
    async for key in redis.scan_iter(match="pc:line:*", count=500):
        lined.update(text(raw) for raw in await redis.zrange(key, 0, -1))
    for d in docs:
        for c in d["clients"]:
            waits = c["position"] is not None and c["session_id"] is None
            if waits and c["id"] not in lined and c["id"] not in paired_clients:
                out.append(f"client {c['id']} waits but is in no line")
    return out


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sessions: dict[str, dict[str, Any]] = {}
    for d in docs:
        for s in d["sessions"]:
            # Each session is on one or two nodes; the owner's copy (the
            # client's node) has the deadlines and the final phase.
            if s["id"] not in sessions or s["client_node"] == d["node"]:
                sessions[s["id"]] = s
    return {
        "workers": [w for d in docs for w in d["workers"]],
        "clients": [c for d in docs for c in d["clients"]],
        "sessions": list(sessions.values()),
        "games": docs[0]["games"],
        "closing": sum(d["closing"] for d in docs),
        "stopping": any(d["stopping"] for d in docs),
        "node": docs[0]["node"],
    }


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
