"""A warm worker process for the phone farm: the worker's stack imported
once, a worker forked from it per phone.

Starting ``python -m playcast worker`` costs about a second of CPU, most of
it importing the media stack (aiortc, PyAV, numpy): with six phones plugged
at once, six seconds of CPU before the first one registers. The farm
starts one zygote instead (``python -m playcast.worker.zygote``), which
imports the worker's whole stack and waits. For each phone the farm asks
it for a worker (``playcast.zygote_wire``), and it forks a child that runs
the ordinary worker, ``playcast worker`` with that phone's flags, from the
already imported modules.

Forking without exec is safe here because the zygote never has more than
one thread and never runs an event loop: nothing it imports starts a
thread (OpenBLAS, which would, is told to keep to one), it waits with a
plain ``epoll``, and it checks its thread count before every fork (and
refuses to fork otherwise). Each child:

- is a session and process group of its own (``setsid``), so stopping it
  stops the adb processes it started and nothing else, and one phone's
  crash touches no other;
- gets SIGTERM when the zygote dies (PR_SET_PDEATHSIG), as the zygote does
  when the farm dies: no worker serves players with nobody watching it;
- writes its log to the pipe the farm handed over with the request, reads
  /dev/null, and shows ``playcast worker --serial SERIAL`` in ``ps``.

The zygote reaps its children through pidfds and reports each exit code.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Final, NoReturn

from playcast import zygote_wire as wire

# The worker's stack: what ``playcast worker --backend android`` imports on
# its way to a session, imported here once.
PRELOAD: Final = (
    "playcast.cli",
    "playcast.worker.main",
    "playcast.backends.android",
    "playcast.backends.synthetic",
    "aiortc",
    "av",
    "numpy",
)
# OpenBLAS (numpy's) starts a thread pool at import unless told not to.
SINGLE_THREADED: Final = {"OPENBLAS_NUM_THREADS": "1"}


def thread_count() -> int:
    """Threads of this process, Python's and native ones alike."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def preload() -> None:
    saved = {name: os.environ.get(name) for name in SINGLE_THREADED}
    os.environ.update(SINGLE_THREADED)
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    finally:
        # The workers' own environment stays the farm's.
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def import_time_generators() -> list[random.Random]:
    """The seeded random generators the imports made (aiohttp draws its
    WebSocket masks from one): forked as they are, every worker would draw
    the same numbers. (Python reseeds ``random``'s own after a fork, numpy
    its global one.)"""
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, random.Random) and not isinstance(o, random.SystemRandom)
    ]


def reseed(generators: list[random.Random]) -> None:
    """In a child: its own numbers, from the system's entropy."""
    for generator in generators:
        generator.seed()


class Zygote:
    def __init__(self, control: socket.socket, generators: list[random.Random]) -> None:
        self.control = control
        self.generators = generators
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, None)
        self.children: dict[int, int] = {}  # pidfd -> pid

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self._request():
                        return
                else:
                    self._reap(key.fd, key.data)

    def _request(self) -> bool:
        try:
            doc, fds = wire.receive(self.control)
        except ValueError as exc:  # the farm's bug, not a reason to drop its workers
            print(f"zygote: unreadable request dropped: {exc}", file=sys.stderr)
            return True
        if doc is None:
            return False  # the farm has gone
        request_id = doc.get("spawn")
        try:
            argv, title = [str(a) for a in doc["argv"]], [str(w) for w in doc["title"]]
            if len(fds) != 1:
                raise ValueError(f"{len(fds)} descriptors, not the output pipe alone")
            threads = thread_count()
            if threads != 1:
                raise RuntimeError(f"{threads} threads in the zygote: forking is not safe")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            for fd in fds:
                os.close(fd)
            wire.send(self.control, {"failed": request_id, "error": str(exc)})
            return True
        self._spawn(request_id, argv, title, fds[0])
        return True

    def _spawn(self, request_id: Any, argv: list[str], title: list[str], output: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(output)
            wire.send(self.control, {"failed": request_id, "error": f"fork: {exc}"})
            return
        if pid == 0:
            self._child(argv, title, output)
        os.close(output)
        pidfd = os.pidfd_open(pid)  # not reaped yet: the pid is still this child's
        self.children[pidfd] = pid
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        wire.send(self.control, {"spawned": request_id, "pid": pid}, [pidfd])

    def _reap(self, pidfd: int, pid: int) -> None:
        status = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        del self.children[pidfd]
        code = wire.exit_code(status) if status is not None else -1
        wire.send(self.control, {"exited": pid, "code": code})

    def _child(self, argv: list[str], title: list[str], output: int) -> NoReturn:
        code = 1
        try:
            os.setsid()
            wire.die_with_parent()
            if os.getppid() != self.pid:  # the zygote died before PDEATHSIG was set
                os._exit(1)
            # Nothing of the zygote's stays open in a worker.
            self.selector.close()
            self.control.close()
            for pidfd in self.children:
                os.close(pidfd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(output, 1)
            os.dup2(output, 2)
            os.close(null)
            os.close(output)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            reseed(self.generators)
            wire.set_title(title)
            sys.argv = ["playcast", *argv]
            code = run_worker(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)


def run_worker(argv: list[str]) -> int:
    """``playcast ARGV`` as the command would run it, its exit status returned."""
    from playcast.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m " + wire.ZYGOTE_MODULE)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--title-room", default="", help="room for the workers' titles in ps")
    args = parser.parse_args()
    control = socket.socket(fileno=args.control_fd)
    # ^C in the farm's terminal is the farm's to handle; a worker gets the default back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.perf_counter()
    preload()
    import_s = time.perf_counter() - started
    wire.set_title(["playcast", "farm-zygote"])
    gc.collect()
    generators = import_time_generators()
    gc.freeze()  # the children's garbage collector leaves the shared pages alone
    ready = {"ready": os.getpid(), "threads": thread_count(), "import_s": round(import_s, 3)}
    wire.send(control, ready)
    Zygote(control, generators).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
