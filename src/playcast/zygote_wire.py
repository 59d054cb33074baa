"""What the phone farm and its zygote say to each other, and the process
plumbing both sides share (no media stack here: the farm imports this).

The zygote (``worker/zygote.py``) is a warm worker process that forks one
worker per phone; the farm (``farm/zygote.py``) asks it over a
``SOCK_SEQPACKET`` Unix socket: one JSON object a packet, file descriptors
alongside (``SCM_RIGHTS``).

- farm to zygote: ``{"spawn": id, "argv": [...], "title": [...]}`` with the
  write end of the worker's output pipe;
- zygote to farm: ``{"ready": pid, "threads": n, "import_s": s}`` once;
  ``{"spawned": id, "pid": pid}`` with a pidfd of the worker, or
  ``{"failed": id, "error": text}``; ``{"exited": pid, "code": code}`` when a
  worker has been reaped (a negative code: the signal that ended it).

End of file on the socket: the farm has gone, and the zygote exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any, Final

ZYGOTE_MODULE: Final = "playcast.worker.zygote"
MAX_PACKET: Final = 1 << 16
PR_SET_PDEATHSIG: Final = 1


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC: Final = _libc()  # loaded before any fork: a child only calls it


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child: ``sig`` when its parent dies (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def send(sock: socket.socket, doc: dict[str, Any], fds: list[int] | None = None) -> None:
    socket.send_fds(sock, [json.dumps(doc).encode()], fds or [])


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors that came with it; (None, [])
    at end of file. A packet that is not a JSON object is an error."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    doc = json.loads(data)
    if not isinstance(doc, dict):
        for fd in fds:
            os.close(fd)
        raise ValueError(f"not a message: {data[:80]!r}")
    return doc, fds


def exit_code(status: os.waitid_result) -> int:
    """``waitid``'s result as asyncio writes a return code (-N: signal N)."""
    if status.si_code == os.CLD_EXITED:
        return status.si_status
    return -status.si_status


def set_title(words: list[str]) -> bool:
    """Rewrite this process's command line in place (what ``ps`` and
    /proc/PID/cmdline show), within the room its original one had: a forked
    worker says which phone it serves, as an exec'd one did."""
    if _LIBC is None:
        return False
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, ValueError, IndexError):
        return False
    room = end - start
    if room <= 1:
        return False
    title = b"\0".join(w.encode() for w in words)[: room - 1]
    ctypes.memmove(start, title.ljust(room, b"\0"), room)
    return True
