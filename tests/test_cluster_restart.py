"""A node SIGKILLed and started again under its own ``--node-id``, as systemd
restarts ``playcast-server@A`` a second later: the sessions its first life
shared end on the other nodes, nothing of that life stays in Redis, and the
new life pairs and relays across nodes like any node. Twice, since a node id
the others once found dead must not stay dead to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from playcast_testing.redis_server import running_redis
from playcast_testing.servers import running_server
from test_cluster_processes import FAST, cluster, consistent, handshake, join, register

from playcast.protocol import Leave, Shutdown, ShutdownAck


async def test_a_node_restarted_under_its_own_id() -> None:
    async with (
        running_redis() as redis,
        cluster(redis.url, "AB") as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        for life in range(2):
            w_a = await register(nodes["A"], stack)  # A's worker, B's player
            c_b = await join(nodes["B"], stack)
            await handshake(w_a, c_b)
            nodes["A"].send_signal(signal.SIGKILL)
            await nodes["A"].stop(None)
            # Back at once under the same id, before its liveness key expires
            # (it listens once its first life is dealt with).
            restarted = asyncio.ensure_future(
                stack.enter_async_context(
                    running_server(**{**FAST, "redis": redis.url, "node_id": "A"})
                )
            )
            shutdown = await c_b.expect(Shutdown, timeout=10)
            assert shutdown.reason == "worker_failed", life
            await c_b.send(ShutdownAck(ok=True, detail=""))
            nodes["A"] = await restarted
            # Listening is not serving: the new life takes peers once it
            # reaches Redis as a node (until then a worker is turned away, 503).
            await nodes["A"].wait_serving()
            # The new life serves across nodes: B's answer reaches A's worker.
            w_new = await register(nodes["A"], stack)
            c_new = await join(nodes["B"], stack)
            await handshake(w_new, c_new)
            await c_new.send(Leave())
            assert (await w_new.expect(Shutdown)).reason == "client_left"
            await w_new.send(ShutdownAck(ok=True, detail=""))
            doc = await nodes["B"].wait_status(lambda d: not d["sessions"] and not d["clients"])
            assert {w["node"] for w in doc["workers"]} <= {"A"}
            await consistent(nodes)
