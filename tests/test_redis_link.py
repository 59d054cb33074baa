"""The cluster's lean Redis connection (``redis_link``) against a real
redis-server: a new connection loads the scripts ahead of its first batch,
so a restarted Redis never refuses a batch's operation while running the
messages that follow it."""

from __future__ import annotations

from playcast_testing.redis_server import running_redis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from playcast.signaling.cluster.redis_link import RedisLink
from playcast.signaling.shared.records import Publish, WorkerEntry
from playcast.signaling.shared.redis_state import RedisShared

GAME = "com.supercell.clashroyale"


def publish(wid: str) -> Publish:
    return Publish(WorkerEntry(wid, "A", GAME, ("H264",), "10.0.0.1", 9), f"s-{wid}", 1.0)


async def test_a_new_connection_loads_the_scripts_before_its_first_batch() -> None:
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        link = RedisLink(redis, 2.0, greeting=shared.load_commands())
        bare = RedisLink(redis, 2.0)
        try:
            probe = ("PUBLISH", "pc:bus:nobody", b"x")  # a batch's message, after its operation
            answers = await link.run([shared.evalsha(publish("w1")), probe])
            assert len(answers) == 2  # the greeting's answers are not the batch's
            assert not isinstance(answers[0], Exception) and answers[1] == 0
            assert await redis.hexists("pc:w:w1", "game")
            # Redis restarted: its script cache is empty; each link reconnects
            # on its next batch.
            await server.restart()
            (refused,) = await bare.run([shared.evalsha(publish("w2"))])
            assert isinstance(refused, NoScriptError)  # what the greeting spares
            (answer,) = await link.run([shared.evalsha(publish("w3"))])
            assert not isinstance(answer, Exception), answer
            # Only a new connection greets: a cache flushed under a live one
            # is refused, and the cluster layer loads the scripts and retries.
            await bare.run([("SCRIPT", "FLUSH")])
            (refused,) = await link.run([shared.evalsha(publish("w4"))])
            assert isinstance(refused, NoScriptError)
            # ... sending them ahead of the refused operation, in one round trip.
            (answer,) = await link.run(
                [shared.evalsha(publish("w4"))], ahead=shared.load_commands()
            )
            assert not isinstance(answer, Exception), answer
        finally:
            await link.close()
            await bare.close()
            await redis.aclose()
