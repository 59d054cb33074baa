"""A lean connection to Redis for the cluster's hot loops.

redis-py's asyncio client costs a node about 40 µs of CPU a round trip (its
stream reader, its futures and timeouts per reply, its encoder per
argument); this link costs about 10: the commands of a batch go out in one
``transport.write``, and the answers are parsed by hiredis straight from
``data_received`` and handed back together, in order. A link that has
subscribed to a channel also hands each published message, as it comes, to
``on_push`` (RESP2: a ``message`` array on the same connection).

The connection itself is opened by redis-py (so the URL's database,
password and TLS settings apply), then taken over: its transport gets this
link's protocol. A link reconnects on its next use after any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

try:  # redis-py's mapping of an error answer to its exception (NOSCRIPT -> NoScriptError)
    from redis._parsers.base import BaseParser

    _reply_error: Callable[[str], Exception] = BaseParser.parse_error
except ImportError:  # pragma: no cover - another redis-py layout
    _reply_error = ResponseError

Command = Sequence[str | bytes | int | float]
_MESSAGE = b"message"


def pack(commands: Sequence[Command]) -> bytes:
    """``commands`` in the Redis protocol, as one buffer (hiredis's packer,
    the one redis-py uses when hiredis is installed)."""
    # (its stub types the argument as a 1-tuple)
    return b"".join([hiredis.pack_command(tuple(c)) for c in commands])  # type: ignore[arg-type]


class _Protocol(asyncio.Protocol):
    """Answers to the waiting batches, in order; pushes to ``on_push``."""

    def __init__(
        self,
        on_push: Callable[[list[Any]], None] | None,
        on_lost: Callable[[], None] | None,
    ) -> None:
        self.reader = hiredis.Reader(replyError=_reply_error)
        self.on_push = on_push
        self.on_lost = on_lost
        # Each batch waiting for answers: (future, answers expected, answers
        # so far, when it was sent).
        self.waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        # The stream writer redis-py opened: kept, since it closes its
        # transport when collected.
        self.writer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pushes: list[list[Any]] = []
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"unreadable answer from Redis: {exc}"))
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                break
            if self.on_push is not None and isinstance(reply, list) and reply[:1] == [_MESSAGE]:
                pushes.append(reply)
                continue
            if not self.waiting:
                continue  # an answer for a batch that timed out: the link is dropped anyway
            future, expected, answers, _ = self.waiting[0]
            answers.append(reply)
            if len(answers) == expected:
                self.waiting.popleft()
                if not future.done():
                    future.set_result(answers)
        if pushes and self.on_push is not None:
            self.on_push(pushes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc!r}"))
        if self.on_lost is not None:
            self.on_lost()

    def fail(self, exc: Exception) -> None:
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc)


class RedisLink:
    """One connection, owned by one loop (a second user would only queue
    behind it): ``run`` sends a batch and returns each command's answer, an
    error answer as its ``ResponseError``; a batch unanswered within
    ``timeout`` drops the connection and raises ``redis.TimeoutError``.
    ``on_push``: published messages, as they come; ``on_lost``: the
    connection closed under it. ``greeting``: commands that go ahead of the
    first batch on each new connection, their answers dropped (a new
    connection may reach a new Redis: restarted, or failed over)."""

    def __init__(
        self,
        client: Redis,
        timeout: float,
        on_push: Callable[[list[Any]], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        greeting: Sequence[Command] = (),
    ) -> None:
        self.pool: Any = client.connection_pool  # make_connection is untyped
        self.timeout = timeout
        self.on_push = on_push
        self.on_lost = on_lost
        self.greeting = list(greeting)
        self._proto: _Protocol | None = None
        # One timer looks at the oldest unanswered batch now and then (a
        # timer per batch costs more than the batch's own work).
        self._watch: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.lost

    async def _connect(self) -> _Protocol:
        conn = self.pool.make_connection()
        await conn.connect()  # AUTH, SELECT, TLS: as the URL says
        writer = conn._writer
        # Ours from now on: redis-py must neither read from nor close it.
        conn._writer = conn._reader = None
        if writer is None:
            raise RedisConnectionError("redis-py opened no stream")
        transport = writer.transport
        proto = _Protocol(self.on_push, self.on_lost)
        proto.writer = writer
        transport.set_protocol(proto)
        proto.connection_made(transport)
        return proto

    async def run(
        self,
        commands: Sequence[Command],
        answers: int | None = None,
        ahead: Sequence[Command] = (),
    ) -> list[Any]:
        """``answers``: how many of the commands answer (``CLIENT REPLY
        SKIP`` silences the next one); none: written, not waited for.
        ``ahead``: commands written first, their answers dropped (on a new
        connection, the greeting goes ahead of them)."""
        proto = self._proto
        if proto is None or proto.lost:
            try:
                async with asyncio.timeout(self.timeout):
                    proto = self._proto = await self._connect()
            except TimeoutError:
                raise RedisTimeout(f"no connection to Redis within {self.timeout} s") from None
            if self.greeting:
                ahead = [*self.greeting, *ahead]
        assert proto.transport is not None
        expected = len(commands) if answers is None else answers
        dropped = len(ahead)
        if dropped:
            commands = [*ahead, *commands]
            expected += dropped
        if expected == 0:
            proto.transport.write(pack(commands))
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        proto.waiting.append((future, expected, [], time.monotonic()))
        if self._watch is None:
            self._watch = loop.call_later(self.timeout / 4, self._check)
        proto.transport.write(pack(commands))
        try:
            replies = await future
        except RedisError:
            self.drop()
            raise
        return replies[dropped:] if dropped else replies  # (no copy on every batch)

    def _check(self) -> None:
        """The oldest batch still unanswered after ``timeout``: the link is
        dropped and every waiting batch fails with ``redis.TimeoutError``."""
        self._watch = None
        proto = self._proto
        if proto is None or not proto.waiting:
            return
        if time.monotonic() - proto.waiting[0][3] > self.timeout:
            proto.fail(RedisTimeout(f"no answer from Redis within {self.timeout} s"))
            self.drop()
            return
        self._watch = asyncio.get_running_loop().call_later(self.timeout / 4, self._check)

    def drop(self) -> None:
        """Close the connection now; the next ``run`` opens a new one."""
        proto, self._proto = self._proto, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            self.drop()
