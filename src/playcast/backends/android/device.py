"""The phone's side of the set-up, all through adb: the device and its game
checked, the scrcpy server pushed and started behind a forward tunnel, the
game relaunched, and the server stopped again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from playcast.backends.adb import Adb, AdbError
from playcast.backends.android.settings import AndroidSettings
from playcast.backends.base import BackendError
from playcast.backends.scrcpy import DEVICE_SERVER_PATH, ServerOptions, server_command

log = logging.getLogger("playcast.android")


async def check_server_file(settings: AndroidSettings) -> Path:
    jar = Path(settings.scrcpy_server)
    if not await asyncio.to_thread(jar.is_file):
        raise BackendError(f"scrcpy server file {jar} not found")
    return jar


def check_options(opts: ServerOptions) -> list[str]:
    """The server's command line; a setting it cannot take is a BackendError."""
    try:
        return server_command(opts)
    except ValueError as exc:
        raise BackendError(str(exc)) from None


async def prepare(adb: Adb, settings: AndroidSettings) -> None:
    """A usable device with the game on it, and the scrcpy server pushed to it."""
    state = await adb.get_state()
    if state != "device":
        raise BackendError(f"device {settings.serial or '(default)'} is {state}")
    jar = await check_server_file(settings)
    await adb.push(jar, DEVICE_SERVER_PATH)
    if not await adb.is_installed(settings.game):
        raise BackendError(f"{settings.game} is not installed on the device")


@contextlib.asynccontextmanager
async def tunnel(adb: Adb, opts: ServerOptions) -> AsyncIterator[int]:
    """A local port forwarded to the server's socket, while it connects."""
    port = await adb.forward("tcp:0", f"localabstract:{opts.socket_name}")
    try:
        yield port
    finally:
        # As scrcpy does: the tunnel is only needed to connect.
        await adb.forward_remove(f"tcp:{port}")


async def spawn_server(
    adb: Adb, command: list[str]
) -> tuple[asyncio.subprocess.Process, deque[str], asyncio.Task[None]]:
    """The server's process, the tail of its log, and the task that reads it."""
    proc = await adb.spawn_shell(command)
    output: deque[str] = deque(maxlen=40)
    return proc, output, asyncio.create_task(_pump_output(proc, output))


async def _pump_output(proc: asyncio.subprocess.Process, output: deque[str]) -> None:
    """The server's log lines, to our log and to a tail kept for error messages."""
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            output.append(line)
            log.info("device: %s", line)


async def terminate(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def relaunch(adb: Adb, settings: AndroidSettings) -> None:
    """Wake the phone and dismiss its keyguard, force-stop the game, start it
    again, and wait until it is in front. (scrcpy's ``stay_awake`` keeps the
    screen on from there while the server runs.)"""
    game = settings.game
    failed = await adb.wake_and_unlock()
    if failed is not None:
        log.warning("%s", failed)  # the launch below says whether it mattered
    await adb.force_stop(game)
    await adb.launch(game)
    deadline = time.monotonic() + settings.launch_timeout
    # No event tells us the activity resumed: poll, at a short interval.
    while game not in await adb.resumed_packages():
        if time.monotonic() > deadline:
            raise BackendError(f"{game} not in the foreground after {settings.launch_timeout:g}s")
        await asyncio.sleep(settings.poll_interval)
    log.info("%s is in the foreground", game)


@contextlib.asynccontextmanager
async def adb_errors() -> AsyncIterator[None]:
    try:
        yield
    except AdbError as exc:
        raise BackendError(str(exc)) from None
