"""adb as a subprocess (Debian's ``adb`` package, or anything on PATH named adb).

Every call has a timeout: a wedged adb server must turn into a BackendError
for the worker to retry, never into a hung worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("playcast.android.adb")

# The screen on, and an insecure keyguard (a swipe) out of the way: a game
# launched behind the lock screen never reaches the foreground. A PIN or a
# pattern cannot be dismissed this way (remove it on a phone that serves).
WAKE_AND_UNLOCK: Final = "input keyevent KEYCODE_WAKEUP; wm dismiss-keyguard"


class AdbError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class AdbResult:
    returncode: int
    stdout: str
    stderr: str


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill our own child and wait for it, so no zombie or open pipe is left."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()


class Adb:
    def __init__(
        self, executable: str = "adb", serial: str | None = None, timeout: float = 20.0
    ) -> None:
        self.executable = executable
        self.serial = serial
        self.timeout = timeout

    def argv(self, *args: str) -> list[str]:
        head = [self.executable]
        if self.serial:
            head += ["-s", self.serial]
        return head + list(args)

    async def run(self, *args: str, timeout: float | None = None, check: bool = True) -> AdbResult:
        argv = self.argv(*args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise AdbError(f"cannot run {self.executable}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            raise AdbError(f"timed out: {' '.join(argv)}") from None
        finally:
            await _reap(proc)
        result = AdbResult(
            proc.returncode if proc.returncode is not None else -1,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )
        log.debug("%s -> %d", argv, result.returncode)
        if check and result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            raise AdbError(f"{' '.join(args[:3])} failed ({result.returncode}): {detail}")
        return result

    async def get_state(self, timeout: float | None = None) -> str:
        """``device`` when usable; otherwise ``offline``, ``unauthorized``, ``missing``…"""
        result = await self.run("get-state", timeout=timeout, check=False)
        if result.returncode == 0:
            return result.stdout.strip() or "unknown"
        text = (result.stderr + result.stdout).lower()
        for state in ("offline", "unauthorized", "authorizing", "recovery"):
            if state in text:
                return state
        return "missing"

    async def push(self, local: str | os.PathLike[str], remote: str) -> None:
        await self.run("push", os.fspath(local), remote)

    async def forward(self, local: str, remote: str) -> int:
        """Open a forward tunnel; with ``tcp:0`` adb picks the port and prints it."""
        result = await self.run("forward", local, remote)
        if local == "tcp:0":
            try:
                return int(result.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise AdbError(f"adb forward printed no port: {result.stdout!r}") from None
        return int(local.removeprefix("tcp:"))

    async def forward_remove(self, local: str) -> None:
        await self.run("forward", "--remove", local, check=False)

    async def shell(self, *command: str, timeout: float | None = None) -> str:
        return (await self.run("shell", *command, timeout=timeout)).stdout

    async def spawn_shell(self, command: Sequence[str]) -> asyncio.subprocess.Process:
        """A long-running ``adb shell``; stdout and stderr merged for logging."""
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv("shell", *command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise AdbError(f"cannot run {self.executable}: {exc}") from exc

    async def wake_and_unlock(self) -> str | None:
        """``WAKE_AND_UNLOCK``; what went wrong, or None. Never raises: an old
        phone without ``wm dismiss-keyguard`` still gets its game launched."""
        try:
            result = await self.run("shell", WAKE_AND_UNLOCK, check=False)
        except AdbError as exc:
            return str(exc)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-300:]
            return f"wake and unlock failed ({result.returncode}): {detail}"
        return None

    # --- the game -----------------------------------------------------------------

    async def is_installed(self, package: str) -> bool:
        result = await self.run("shell", "pm", "path", package, check=False)
        return result.returncode == 0 and "package:" in result.stdout

    async def force_stop(self, package: str) -> None:
        await self.shell("am", "force-stop", package)

    async def launch(self, package: str) -> None:
        """Start the package's launcher activity, without knowing its class name."""
        out = await self.shell(
            "monkey", "-p", package, "-c", "android.intent.category.LAUNCHER", "1"
        )
        if "No activities found" in out or "monkey aborted" in out:
            raise AdbError(f"{package} has no launcher activity: {out.strip()[-300:]}")

    async def resumed_packages(self) -> set[str]:
        """Packages whose activity is resumed (in the foreground).

        The line's name changed across Android versions (mResumedActivity,
        topResumedActivity, ResumedActivity), so match them all.
        """
        out = await self.shell("dumpsys", "activity", "activities")
        found = set()
        for line in out.splitlines():
            if "ResumedActivity" not in line:
                continue
            for word in line.replace("{", " ").replace("}", " ").split():
                if "/" in word and not word.startswith("/"):
                    found.add(word.split("/", 1)[0])
        return found
