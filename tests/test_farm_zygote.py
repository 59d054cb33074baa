"""The farm's zygote on its own: a real zygote process, the farm's client of
it (``farm/zygote.py``), real forked workers (synthetic backend, a server
that is not there: they start and keep trying)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import psutil
import pytest
from playcast_testing.farms import cmdline

from playcast.farm.settings import worker_env
from playcast.farm.zygote import Child, Zygote

TIMEOUT = 60.0
NOWHERE = "ws://127.0.0.1:9"  # nothing listens: a worker keeps retrying


def test_the_workers_stack_imports_without_a_thread() -> None:
    """What forking without exec rests on: after the zygote's imports
    (aiortc, PyAV, numpy and the worker's own), one thread, native ones
    included (OpenBLAS would start its pool unless told not to)."""
    code = (
        "import sys, threading\n"
        "from playcast.worker import zygote\n"
        "zygote.preload()\n"
        "assert {'aiortc', 'av', 'numpy', 'playcast.worker.main'} <= set(sys.modules)\n"
        "print(zygote.thread_count(), threading.active_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    z = Zygote(sys.executable, worker_env())
    try:
        yield z
    finally:
        await z.close()


async def spawn(z: Zygote, *argv: str) -> tuple[Child, asyncio.StreamReader]:
    ours, theirs = os.pipe2(os.O_CLOEXEC)
    try:
        child = await z.spawn(["worker", *argv], ["playcast", "worker", "--serial", "x"], theirs)
    finally:
        os.close(theirs)
    stream = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(ours, "rb", buffering=0)
    )
    return child, stream


async def test_a_forked_worker_is_its_own_group_says_its_phone_and_stops_cleanly(
    zygote: Zygote,
) -> None:
    async with asyncio.timeout(TIMEOUT):
        await zygote.start()
        child, out = await spawn(zygote, "--server", NOWHERE, "--backend", "synthetic")
        await out.readuntil(b"worker starting")
        proc = psutil.Process(child.pid)
        assert proc.ppid() == zygote.pid
        assert os.getpgid(child.pid) == child.pid and os.getsid(child.pid) == child.pid
        assert cmdline(proc) == ["playcast", "worker", "--serial", "x"]
        assert cmdline(psutil.Process(zygote.pid)) == ["playcast", "farm-zygote"]
        child.signal(signal.SIGTERM)
        assert await child.exited == 0
        assert b"worker stopped" in await out.read()
        child.close()


async def test_exit_codes_and_usage_errors_come_back(zygote: Zygote) -> None:
    async with asyncio.timeout(TIMEOUT):
        child, out = await spawn(zygote, "--no-such-flag")
        assert await child.exited == 2
        said = await out.read()
        assert b"usage: playcast" in said and b"unrecognized arguments: --no-such-flag" in said
        child.close()
        child, out = await spawn(zygote, "--server", NOWHERE, "--backend", "synthetic")
        await out.readuntil(b"worker starting")
        child.signal(signal.SIGKILL)
        assert await child.exited == -signal.SIGKILL
        child.close()


async def test_workers_die_with_their_zygote_and_a_new_one_serves(zygote: Zygote) -> None:
    async with asyncio.timeout(TIMEOUT):
        child, out = await spawn(zygote, "--server", NOWHERE, "--backend", "synthetic")
        await out.readuntil(b"worker starting")
        first = zygote.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        # No worker outlives its zygote (PDEATHSIG); nobody knows its exit code.
        assert await child.exited is None
        assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == "zombie"
        child.close()
        assert zygote.pid is None
        # The next worker wanted brings a new zygote.
        again, out = await spawn(zygote, "--help")
        assert await again.exited == 0
        assert zygote.pid not in (None, first) and zygote.starts == 2
        again.close()
