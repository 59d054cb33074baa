"""A scripted protocol peer over a real WebSocket: a worker or client by hand."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp

from playcast.protocol import Error, Message, Ping, Pong, Resume, Resumed, decode, encode_str

T = TypeVar("T")


class ScriptedPeer:
    """Sends what a test says and queues what it receives.

    With ``auto_pong`` it answers pings itself, as a live peer would; without,
    it goes silent on heartbeats so a test can let it time out.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, auto_pong: bool = True) -> None:
        self.ws = ws
        self.auto_pong = auto_pong
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.pings = 0
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            msg = decode(frame.data)
            if isinstance(msg, Ping):
                self.pings += 1
                if self.auto_pong:
                    await self.send(Pong(ts=msg.ts))
                continue
            await self.inbox.put(msg)
        self.close_code = self.ws.close_code
        self.closed.set()

    async def send(self, msg: Message) -> None:
        await self.ws.send_str(encode_str(msg))

    async def send_raw(self, data: str | dict[str, Any]) -> None:
        await self.ws.send_str(data if isinstance(data, str) else json.dumps(data))

    async def recv(self, timeout: float = 10.0) -> Message:
        async with asyncio.timeout(timeout):
            return await self.inbox.get()

    async def expect(self, kind: type[T], timeout: float = 10.0) -> T:
        msg = await self.recv(timeout)
        if not isinstance(msg, kind):
            raise AssertionError(f"expected {kind.__name__}, got {msg!r}")
        return msg

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


@contextlib.asynccontextmanager
async def connect(url: str, *, auto_pong: bool = True) -> AsyncIterator[ScriptedPeer]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        peer = ScriptedPeer(ws, auto_pong=auto_pong)
        try:
            yield peer
        finally:
            await peer.close()


class ResumingMember:
    """A scripted session member that resumes whenever its socket drops.

    ``http`` should not keep connections alive (``force_close``): a refused
    attempt would pin the next one to the same node behind a load balancer.
    ``watch()`` runs until ``stop()``: on each
    close (a cut, a killed node, ``reconnect``) it connects again to the next
    of ``urls`` and sends ``resume`` with its token, quickly at first, until
    ``grace`` is over. ``ended`` keeps any ``shutdown`` it was sent and
    ``failed`` a refusal: a test of a seamless resume asserts both empty.
    """

    QUICK = (0.0, 0.1, 0.25, 0.5)

    def __init__(
        self,
        http: aiohttp.ClientSession,
        urls: list[str],
        peer: ScriptedPeer,
        session_id: str,
        token: str,
        grace: float,
    ) -> None:
        self.http, self.urls, self.peer = http, urls, peer
        self.session_id, self.token, self.grace = session_id, token, grace
        self.resumes = 0
        self.latencies: list[float] = []
        self.ended: list[Message] = []
        self.failed: Message | None = None
        self.resumed = asyncio.Condition()
        self.history: list[str] = []  # each attempt's outcome, for failure messages
        self._stopping = False
        self._turn = 0
        self._task: asyncio.Task[None] | None = None

    def watch(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def wait_resumes(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self.resumed:
            await self.resumed.wait_for(lambda: self.resumes >= count or self.failed is not None)
        assert self.failed is None, self.failed

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self.peer.closed.wait()
            if self._stopping:
                return
            dropped = loop.time()
            while not self.peer.inbox.empty():
                msg = self.peer.inbox.get_nowait()
                if type(msg).__name__ == "Shutdown":
                    self.ended.append(msg)
            if self.ended:
                return
            if not await self._resume(dropped, loop):
                async with self.resumed:
                    self.resumed.notify_all()
                return

    async def _resume(self, dropped: float, loop: asyncio.AbstractEventLoop) -> bool:
        attempt = 0
        while loop.time() <= dropped + self.grace:
            url = self.urls[self._turn % len(self.urls)]
            self._turn += 1
            answer = await self._try(url)
            self.history.append(f"{loop.time() - dropped:.3f}s {type(answer).__name__}")
            if isinstance(answer, Resumed):
                self.token = answer.resume_token
                async with self.resumed:
                    self.resumes += 1
                    self.latencies.append(loop.time() - dropped)
                    self.resumed.notify_all()
                return True
            if answer is not None:
                self.failed = answer
                return False
            wait = self.QUICK[attempt] if attempt < len(self.QUICK) else 0.5
            attempt += 1
            await asyncio.sleep(wait)  # a retry delay, as the worker's
        self.failed = Error(code="resume_failed", message="no node took it within the grace")
        return False

    async def _try(self, url: str) -> Message | None:
        """Resumed (in place), an error (refused), or None (try again)."""
        try:
            async with asyncio.timeout(2.0):
                ws = await self.http.ws_connect(url, autoping=True, max_msg_size=0)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.history.append(f"connect: {type(exc).__name__} {getattr(exc, 'status', '')}")
            return None
        peer = ScriptedPeer(ws)
        await peer.send(Resume(session_id=self.session_id, token=self.token))
        try:
            msg = await peer.recv(timeout=2.0)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.history.append(f"no answer: {exc!r}")
            await peer.close()
            return None
        if isinstance(msg, Resumed):
            self.peer = peer
            return msg
        await peer.close()
        if isinstance(msg, Error) and msg.code == "resume_failed":
            return msg
        return None  # e.g. a stopping node's greeting: elsewhere

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.peer.close()
