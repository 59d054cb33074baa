"""Start a real ``playcast farm`` process against fake phones, and watch it.

The farm runs ``adb`` from PATH: ``farm_env`` puts ``tests/fake_adb`` first
and points it at a ``FakeAdbServer``, and the farm's workers inherit that, so
every adb call of the farm and of each worker reaches the fake phones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

from playcast_testing.fake_device import FAKE_ADB
from playcast_testing.fake_farm import FakeAdbServer
from playcast_testing.processes import LoggedProcess

FARM_STARTED = r"farm_started .*metrics_port=(\d+)"
# Every process a test farm starts carries this variable (children inherit it),
# so whatever one leaves behind is found by it, and only its own.
MARK_ENV = "PLAYCAST_TEST_FARM"
# Workers restart fast in tests (as playcast_testing.workers.FAST_RESTART).
FAST_FARM = ("--backoff-base", "0.05", "--backoff-cap", "0.5", "--stop-timeout", "5")


def farm_env(adb: FakeAdbServer, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYCAST_")}
    env["PATH"] = f"{FAKE_ADB.parent}{os.pathsep}{os.environ['PATH']}"
    env.update(adb.env())
    env["PYTHONUNBUFFERED"] = "1"
    env[MARK_ENV] = uuid.uuid4().hex
    env.update(extra or {})
    return env


def marked(mark: str) -> list[psutil.Process]:
    """Live processes started under a test farm's mark (the farm, its workers, adb)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK_ENV) == mark:
                found.append(proc)
    return found


class FarmProcess(LoggedProcess):
    label = "farm"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self.metrics_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/status") as r:
            doc = await r.json()
            assert isinstance(doc, dict)
            return doc

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as r:
            return await r.text()

    async def phone(self, serial: str) -> dict[str, Any]:
        doc = await self.status()
        found: list[dict[str, Any]] = [p for p in doc["phones"] if p["serial"] == serial]
        assert found, f"{serial} not in /status: {doc}"
        return found[0]

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll /status until ``predicate`` holds (it has no push channel)."""
        async with asyncio.timeout(timeout):
            while True:
                doc = await self.status()
                if predicate(doc):
                    return doc
                await asyncio.sleep(0.02)

    async def wait_event(
        self, name: str, *, after: int = 0, timeout: float = 30.0, **fields: str
    ) -> tuple[int, re.Match[str]]:
        """The next ``name`` line from index ``after`` with these ``key=value`` fields."""
        pattern = rf"\b{re.escape(name)}\b" + "".join(
            rf".* {re.escape(k)}={re.escape(v)}(?=\s|$)" for k, v in fields.items()
        )
        return await self.find_line(pattern, after=after, timeout=timeout)

    def zygotes(self) -> list[psutil.Process]:
        """The farm's zygotes (``playcast farm-zygote`` in ps): one, or none."""
        return _titled(psutil.Process(self.proc.pid), ["playcast", "farm-zygote"])

    def zygote(self) -> psutil.Process | None:
        found = self.zygotes()
        return found[0] if found else None

    def workers(self) -> list[psutil.Process]:
        """The farm's worker processes alive now: its zygote's children that
        say ``playcast worker --serial SERIAL`` in ps. (Not their own
        children: between fork and exec an adb call a worker starts shows
        its worker's title.)"""
        return [w for z in self.zygotes() for w in _titled(z, ["playcast", "worker"])]

    def worker(self, serial: str) -> psutil.Process:
        """The one live worker of ``serial``."""
        found = [p for p in self.workers() if serial_of(p) == serial]
        assert len(found) == 1, f"{len(found)} workers for {serial}"
        return found[0]


def _titled(parent: psutil.Process, title: list[str]) -> list[psutil.Process]:
    """``parent``'s children whose command line starts with ``title``."""
    out = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in parent.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if cmdline(child)[: len(title)] == title:
                    out.append(child)
    return out


def cmdline(proc: psutil.Process) -> list[str]:
    """Its command line without the padding a rewritten title leaves (NULs)."""
    return [word for word in proc.cmdline() if word]


def serial_of(proc: psutil.Process) -> str | None:
    argv = cmdline(proc)
    if "--serial" not in argv[:-1]:
        return None
    last = len(argv) - 1 - argv[::-1].index("--serial")
    return argv[last + 1]


def worker_serials(farm: FarmProcess) -> list[str]:
    """The ``--serial`` of every live worker (a serial twice: a duplicate)."""
    serials = []
    for proc in farm.workers():
        with contextlib.suppress(psutil.NoSuchProcess):
            serials.append(serial_of(proc) or "?")
    return sorted(serials)


@contextlib.asynccontextmanager
async def running_farm(
    adb: FakeAdbServer,
    server: str,
    *flags: str,
    worker_flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[FarmProcess]:
    """``playcast farm --server SERVER FLAGS -- WORKER_FLAGS`` on a free metrics port."""
    argv = [sys.executable, "-m", "playcast", "farm", "--server", server]
    argv += ["--metrics-port", "0", *FAST_FARM, *flags, "--", *worker_flags]
    environ = farm_env(adb, env)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environ,
    )
    farm = FarmProcess(proc)
    try:
        _, m = await farm.find_line(FARM_STARTED)
        farm.metrics_port = int(m.group(1))
        yield farm
    finally:
        with contextlib.suppress(Exception):
            await farm.stop(timeout=30.0)
        await farm.reap()
        # Whatever the farm left (it must leave nothing) goes before the next test.
        left = await asyncio.to_thread(marked, environ[MARK_ENV])
        _, alive = await asyncio.to_thread(psutil.wait_procs, left, 10.0)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
