"""The farm's zygote on its own: a real zygote process, the farm's client of
it (``farm/zygote.py``), real forked workers (synthetic backend, a server
that is not there: they start and keep trying)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
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
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3


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


FORK_DRAWS = """
import os, random, sys
from playcast.worker import zygote
zygote.preload()
from aiohttp._websocket.writer import WebSocketWriter

masks = WebSocketWriter.__init__.__kwdefaults__["random"]
generators = zygote.import_time_generators()
assert any(g is masks for g in generators)


def draws(fresh):
    seen = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            if fresh:
                zygote.reseed(generators)
            os.write(w, repr(masks.getrandbits(64)).encode())
            os._exit(0)
        os.close(w)
        seen.append(os.read(r, 200))
        os.waitpid(pid, 0)
    return seen


alike, fresh = draws(False), draws(True)
print(alike[0] == alike[1], fresh[0] != fresh[1])
"""


def test_each_forked_worker_draws_its_own_random_numbers() -> None:
    """aiohttp masks a worker's WebSocket frames with numbers from a generator
    it made at import: forked from one zygote, every worker would mask alike."""
    out = subprocess.run(
        [sys.executable, "-c", FORK_DRAWS], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]  # alike unless reseeded; reseeded, apart


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


async def test_forked_workers_mask_their_websocket_frames_each_its_own_way(
    zygote: Zygote,
) -> None:
    """The same, on the wire: two workers forked from one zygote connect to a
    bare WebSocket server that reads the masking key of their first frame."""
    keys: asyncio.Queue[bytes] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        _, size = await reader.readexactly(2)
        await reader.readexactly({126: 2, 127: 8}.get(size & 0x7F, 0))
        await keys.put(await reader.readexactly(4))  # the masking key (RFC 6455 5.2)
        await reader.read()  # until the worker goes
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    children = []
    try:
        async with asyncio.timeout(TIMEOUT):
            for _ in range(2):
                child, _out = await spawn(zygote, "--server", url, "--backend", "synthetic")
                children.append(child)
            first, second = await keys.get(), await keys.get()
            assert first != second
    finally:
        for child in children:
            child.signal(signal.SIGKILL)
            await child.exited
            child.close()
        server.close()
