"""The cluster link's precise sleep (``precise_sleep.py``): it ends, never
early, and survives what its one user does to it (cancel, re-arm, close).
Its precision is a speed figure: ``bench/timer_jitter.py``."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from playcast.signaling.cluster.precise_sleep import PreciseSleep

linux = pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux's")


@linux
async def test_a_sleep_ends_no_earlier_than_asked() -> None:
    sleep = PreciseSleep()
    try:
        for seconds in (0.0005, 0.002, 0.0001):
            t0 = time.monotonic()
            await sleep.sleep(seconds)
            assert time.monotonic() - t0 >= seconds
        assert sleep.precise  # it used the timerfd, not the fallback
    finally:
        sleep.close()


@linux
async def test_a_cancelled_sleep_leaves_the_next_one_whole() -> None:
    """A cancelled sleep's timer still fires later; the next sleep, armed
    meanwhile, is not ended by it."""
    sleep = PreciseSleep()
    try:
        task = asyncio.create_task(sleep.sleep(0.001))
        await asyncio.sleep(0)  # armed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        await sleep.sleep(0.02)  # re-armed before the old expiry
        assert time.monotonic() - t0 >= 0.02
    finally:
        sleep.close()


@linux
async def test_an_expiry_read_after_re_arming_does_not_end_the_new_sleep() -> None:
    """The loop may hand over a readiness it saw before the timer was armed
    again: the read finds nothing, and the sleeper keeps sleeping."""
    sleep = PreciseSleep()
    try:
        await sleep.sleep(0.0001)  # opens it on this loop
        waiter = asyncio.get_running_loop().create_future()
        sleep._waiter = waiter
        sleep._fired()  # no expiry pending: nothing to read
        assert not waiter.done()
        sleep._waiter = None
    finally:
        sleep.close()


async def test_without_a_timerfd_it_sleeps_as_asyncio_does() -> None:
    sleep = PreciseSleep(enabled=False)
    t0 = time.monotonic()
    await sleep.sleep(0.002)
    assert time.monotonic() - t0 >= 0.0019  # (asyncio's clock resolution)
    assert not sleep.precise
    await sleep.sleep(0)  # nothing to wait for
    sleep.close()


@linux
async def test_closing_wakes_a_sleeper_and_a_closed_one_falls_back() -> None:
    sleep = PreciseSleep()
    task = asyncio.create_task(sleep.sleep(60.0))
    await asyncio.sleep(0)
    sleep.close()
    await asyncio.wait_for(task, 5.0)  # not left hanging for a minute
    # Used again after close: it opens a new timer.
    await sleep.sleep(0.0001)
    sleep.close()
    sleep.close()  # twice is harmless
