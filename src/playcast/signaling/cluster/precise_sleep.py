"""A sleep that ends on time, for the cluster link's gathering window.

uvloop (libuv) keeps timers in whole milliseconds, on a clock it reads once
a loop turn: a 2.4 ms sleep ends anywhere from about 1.4 to 3.5 ms later.
The gathering window is a few milliseconds and each of a session's three
crossings of the cluster waits for it, so that jitter was a quarter of the
wait and of a node's spacing between round trips (``bench/timer_jitter.py``).
Linux's timerfd, a file descriptor the loop watches like a socket, wakes it
within microseconds. Elsewhere, or if libc will not give one, asyncio's own
sleep serves.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys

_CLOCK_MONOTONIC = 1  # the clock of time.monotonic and of the loop
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p
        ]  # fmt: skip
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class PreciseSleep:
    """``await sleep(seconds)``, one sleeper at a time (the outbound loop),
    on the loop that first sleeps; ``close`` when done."""

    def __init__(self, enabled: bool = True) -> None:
        self._lib = _libc() if enabled else None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._spec = _Itimerspec()

    @property
    def precise(self) -> bool:
        """False once it has fallen back to asyncio's sleep."""
        return self._lib is not None

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._lib is not None and self._fd < 0:
            self._open(loop)
        if self._lib is None or loop is not self._loop:
            await asyncio.sleep(seconds)
            return
        ns = max(1, round(seconds * 1e9))  # (a zero would disarm it)
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        # Arming it again replaces an earlier expiry, and one that fired
        # unread still leaves the descriptor readable: read on wake-up, below.
        if self._lib.timerfd_settime(self._fd, 0, ctypes.byref(self._spec), None) != 0:
            self._fall_back()
            await asyncio.sleep(seconds)
            return
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._lib is not None
        fd = self._lib.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            self._lib = None
            return
        try:
            loop.add_reader(fd, self._fired)
        except (NotImplementedError, RuntimeError):  # a loop that cannot watch it
            os.close(fd)
            self._lib = None
            return
        self._fd, self._loop = fd, loop

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed since it fired: the new expiry is to come
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fall_back(self) -> None:
        self.close()
        self._lib = None

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        self._loop = None
        os.close(fd)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a sleeper is not left hanging
