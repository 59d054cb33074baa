"""The farm's side of its zygote: one warm process that forks a worker per phone.

The zygote (``python -m playcast.worker.zygote``, see ``worker/zygote.py``)
has the worker's media stack imported, which the farm itself never imports:
a worker forked from it starts in milliseconds instead of paying for
Python and the imports, about a second of CPU each, six at once when six
phones are plugged. The farm starts it at once, and again at the next
worker wanted after it has died (its workers die with it: PR_SET_PDEATHSIG).

It speaks ``playcast.zygote_wire`` over a socket pair. Each worker comes back
as a ``Child``: its pid, a pidfd (signals reach that process and never a
later one with the same pid), and its exit code once the zygote has reaped
it (None: the zygote died first, so nobody knows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

from playcast import zygote_wire as wire
from playcast.farm.events import event

log = logging.getLogger("playcast.farm.zygote")

# Room in the zygote's command line for each worker's title in ps
# ("playcast worker --serial SERIAL": the serial may be a long mDNS name).
TITLE_ROOM: Final = "." * 96


class ZygoteError(RuntimeError):
    """No worker: the zygote could not start, or died, or refused."""


@dataclass(eq=False)
class Child:
    pid: int
    pidfd: int  # the farm's own, closed by close()
    exited: asyncio.Future[int | None] = field(repr=False)

    def signal(self, sig: int) -> None:
        if self.pidfd >= 0 and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


@dataclass(eq=False)
class _Generation:
    """One zygote process, from start to its end."""

    proc: asyncio.subprocess.Process
    sock: socket.socket
    ready: asyncio.Future[dict[str, Any]]
    pending: dict[int, asyncio.Future[Child]] = field(default_factory=dict)
    children: dict[int, Child] = field(default_factory=dict)  # by pid
    gone: bool = False


class Zygote:
    def __init__(self, python: str, env: dict[str, str], ready_timeout: float = 120.0) -> None:
        self.python = python
        self.env = env
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._gen: _Generation | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        gen = self._gen
        return gen.proc.pid if gen is not None and not gen.gone else None

    async def start(self) -> None:
        """Running and ready (started if need be)."""
        async with self._starting:
            gen = self._gen
            if gen is None or gen.gone:
                gen = self._gen = await self._launch()
            ready = gen.ready
        try:
            async with asyncio.timeout(self.ready_timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            why = f"not ready after {self.ready_timeout:.0f} s"
            self._lost(gen, why)
            gen.proc.kill()
            raise ZygoteError(f"the zygote was {why}") from None

    async def spawn(self, argv: list[str], title: list[str], output: int) -> Child:
        """A worker running ``playcast ARGV``, its output on ``output``."""
        await self.start()
        gen = self._gen
        assert gen is not None
        request = next(self._ids)
        answer: asyncio.Future[Child] = asyncio.get_running_loop().create_future()
        gen.pending[request] = answer
        try:
            wire.send(gen.sock, {"spawn": request, "argv": argv, "title": title}, [output])
        except BlockingIOError:  # not reading for a long while: busy, not gone
            gen.pending.pop(request, None)
            raise ZygoteError("the zygote is not reading its requests") from None
        except OSError as exc:
            gen.pending.pop(request, None)
            self._lost(gen, f"cannot ask it: {exc}")
            raise ZygoteError(f"the zygote is gone: {exc}") from None
        try:
            async with asyncio.timeout(self.ready_timeout):
                return await answer
        except TimeoutError:
            gen.pending.pop(request, None)
            raise ZygoteError("the zygote did not answer") from None

    async def close(self, grace: float = 5.0) -> None:
        """Its end (every worker should be stopped first: they die with it)."""
        gen = self._gen
        if gen is not None:
            self._lost(gen, "closed")
            try:
                async with asyncio.timeout(grace):
                    await gen.proc.wait()
            except TimeoutError:
                gen.proc.kill()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    # --- one zygote ---------------------------------------------------------------

    async def _launch(self) -> _Generation:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self.python, "-m", wire.ZYGOTE_MODULE, "--control-fd", str(theirs.fileno())]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                "--title-room",
                TITLE_ROOM,
                stdin=asyncio.subprocess.DEVNULL,
                env=self.env,
                pass_fds=(theirs.fileno(),),
                preexec_fn=wire.die_with_parent,
            )
        except OSError as exc:
            ours.close()
            raise ZygoteError(f"cannot start the zygote: {exc}") from exc
        finally:
            theirs.close()
        self.starts += 1
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        gen = _Generation(proc, ours, loop.create_future())
        loop.add_reader(ours.fileno(), self._on_readable, gen, time.monotonic())
        watcher = asyncio.create_task(self._watch(gen))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return gen

    async def _watch(self, gen: _Generation) -> None:
        code = await gen.proc.wait()
        event("zygote_exited", pid=gen.proc.pid, code=code)
        self._lost(gen, f"exited ({code})")

    def _on_readable(self, gen: _Generation, started: float) -> None:
        while not gen.gone:
            try:
                doc, fds = wire.receive(gen.sock)
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                self._lost(gen, f"unreadable: {exc}")
                return
            if doc is None:
                self._lost(gen, "its socket closed")
                return
            try:
                self._dispatch(gen, doc, fds, started)
            except (LookupError, TypeError, ValueError) as exc:
                log.error("zygote message %r dropped: %r", doc, exc)
            for fd in fds:
                os.close(fd)

    def _dispatch(
        self, gen: _Generation, doc: dict[str, Any], fds: list[int], started: float
    ) -> None:
        loop = asyncio.get_running_loop()
        if "ready" in doc and not gen.ready.done():
            gen.ready.set_result(doc)
            event(
                "zygote_ready",
                pid=doc["ready"],
                threads=doc.get("threads"),
                import_s=doc.get("import_s"),
                ready_s=round(time.monotonic() - started, 3),
            )
        elif "spawned" in doc:
            child = Child(int(doc["pid"]), fds.pop(0), loop.create_future())
            gen.children[child.pid] = child
            answer = gen.pending.pop(int(doc["spawned"]), None)
            if answer is not None and not answer.done():
                answer.set_result(child)
            else:  # nobody waits for it any more: it must not run unwatched
                child.signal(signal.SIGKILL)
        elif "failed" in doc:
            answer = gen.pending.pop(int(doc["failed"]), None)
            if answer is not None and not answer.done():
                answer.set_exception(ZygoteError(f"the zygote refused: {doc.get('error')}"))
        elif "exited" in doc:
            gone = gen.children.pop(int(doc["exited"]), None)
            if gone is not None and not gone.exited.done():
                gone.exited.set_result(int(doc["code"]))

    def _lost(self, gen: _Generation, why: str) -> None:
        """This zygote is over: nothing more will come from it."""
        if gen.gone:
            return
        gen.gone = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(gen.sock.fileno())
        gen.sock.close()
        error = ZygoteError(f"the zygote is gone ({why})")
        if not gen.ready.done():
            gen.ready.set_exception(error)
            gen.ready.exception()  # retrieved: a start that nobody awaits logs nothing
        for answer in gen.pending.values():
            if not answer.done():
                answer.set_exception(error)
        gen.pending.clear()
        if why != "closed":
            log.warning("zygote %s: %s", gen.proc.pid, why)
        # Its workers die with it (PDEATHSIG): each is over once its pidfd says so.
        for child in gen.children.values():
            if child.pidfd >= 0 and not child.exited.done():
                loop.add_reader(child.pidfd, self._orphan_gone, child)
        gen.children.clear()

    def _orphan_gone(self, child: Child) -> None:
        asyncio.get_running_loop().remove_reader(child.pidfd)
        if not child.exited.done():
            child.exited.set_result(None)
