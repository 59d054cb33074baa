"""Errors the worker used to swallow (issue 9, defect 4) are logged now, with
a traceback where they can only be a bug; each test fails on the old code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from playcast_testing.workers import free_port

from playcast import protocol as t
from playcast.backends.base import VideoPacket
from playcast.backends.synthetic import SyntheticBackend
from playcast.worker.link_state import LinkSettings
from playcast.worker.media import BackendVideoTrack
from playcast.worker.runner import Worker, WorkerSettings
from playcast.worker.session import Session


class Buggy(SyntheticBackend):
    """A backend with a bug in each place the worker calls it."""

    async def packets(self, codec: str = "H264") -> AsyncIterator[VideoPacket]:
        try:
            raise RuntimeError("bug in packets")
            yield  # pragma: no cover
        finally:
            pass

    async def stop(self) -> None:
        await super().stop()
        raise RuntimeError("bug in stop")


class BadClose(SyntheticBackend):
    async def packets(self, codec: str = "H264") -> AsyncIterator[VideoPacket]:
        try:
            async for p in super().packets():
                yield p
        finally:
            raise RuntimeError("bug while closing the stream")


def tracebacks(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage() and r.exc_info]


async def test_a_backend_bug_in_packets_fails_the_track_instead_of_killing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Buggy()
    await backend.start()
    failures: list[str] = []
    track = BackendVideoTrack(backend, on_failure=failures.append)
    from aiortc.mediastreams import MediaStreamError

    with pytest.raises(MediaStreamError):
        await track.recv()
    assert failures and "bug in packets" in failures[0]
    assert track.readyState == "ended"
    assert tracebacks(caplog, "the backend raised")
    await track.aclose()
    await SyntheticBackend.stop(backend)


async def test_closing_the_backend_stream_logs_what_goes_wrong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = BadClose()
    await backend.start()
    track = BackendVideoTrack(backend, on_failure=lambda _: None)
    async with asyncio.timeout(30):
        await track.recv()
        await track.aclose()
    await backend.stop()
    assert tracebacks(caplog, "closing the backend's stream failed")


async def test_a_failed_session_task_is_logged_and_reported_in_the_ack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    start = t.SessionStart(session_id="s-1", client_id="c-1", ice_servers=[])
    session = Session(start, SyntheticBackend(), lambda _: None)

    async def bug() -> None:
        raise RuntimeError("bug in a session task")

    task = asyncio.create_task(bug(), name="inputs-s-1")
    await asyncio.wait({task})
    session._tasks.append(task)
    _, detail = await session.close()
    assert "bug in a session task" in detail
    assert tracebacks(caplog, "task inputs-s-1 failed")


async def test_backend_stop_failing_at_exit_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    backend = Buggy()
    settings = WorkerSettings(
        server=f"ws://127.0.0.1:{free_port()}", link=LinkSettings(backoff_base=10.0)
    )
    worker = Worker(settings, backend)
    worker.stop.set()  # stopped as soon as it runs: straight to the teardown
    async with asyncio.timeout(30):
        await worker.run()
    assert tracebacks(caplog, "backend stop failed")
