"""The phone farms the operator page shows (``--farm``): each farm's
``/status`` (``playcast farm --metrics-port``, ``farm/metrics.py``), read
when the page asks, with a short timeout.

A farm that does not answer in time is shown unreachable, with the age of
its last answer; its phones as that answer had them, marked stale. Reads of
one farm never overlap: pages asking at once share one request, and an
answer younger than ``FRESH`` is used again, so several open pages cost a
farm no more than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

TIMEOUT: Final = 0.8  # seconds: the page asks at least once a second
FRESH: Final = 0.25  # seconds an answer is used again
MAX_BYTES: Final = 4 << 20  # a /status larger than this is not a farm's


@dataclass
class Farm:
    url: str  # as given to --farm
    doc: dict[str, Any] | None = None  # its last answer
    answered_at: float | None = None  # wall clock, of the last answer
    error: str | None = None  # why the last read failed (None: it answered)
    read_at: float = 0.0  # monotonic, of the last read, answered or not
    reading: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def status_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/status") else f"{base}/status"

    def view(self, now: float) -> dict[str, Any]:
        """What the page shows of the farm itself."""
        doc = self.doc or {}
        return {
            "url": self.url,
            "reachable": self.error is None and self.doc is not None,
            "error": self.error,
            "age": None if self.answered_at is None else round(max(0.0, now - self.answered_at), 1),
            "host": doc.get("host"),
            "adb": doc.get("adb"),
            "states": doc.get("states"),
        }

    def phones(self) -> list[dict[str, Any]]:
        phones = (self.doc or {}).get("phones")
        return [p for p in phones if isinstance(p, dict)] if isinstance(phones, list) else []


class FarmWatch:
    def __init__(self, urls: tuple[str, ...], timeout: float = TIMEOUT) -> None:
        self.farms = [Farm(url) for url in urls]
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    async def read(self) -> list[Farm]:
        """Every farm, each read again unless its answer is fresh."""
        await asyncio.gather(*(self._refresh(farm) for farm in self.farms))
        return self.farms

    async def _refresh(self, farm: Farm) -> None:
        if farm.reading is None or farm.reading.done():
            if time.monotonic() - farm.read_at < FRESH:
                return
            farm.reading = asyncio.get_running_loop().create_task(self._fetch(farm))
        # Shielded: a page that goes away does not cancel the read it shares.
        await asyncio.shield(farm.reading)

    async def _fetch(self, farm: Farm) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers={"Accept": "application/json"})
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._http.get(farm.status_url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise ValueError("answer too large")
            doc = json.loads(body)
            if not isinstance(doc, dict) or not isinstance(doc.get("phones"), list):
                raise ValueError("not a farm's /status")
        except TimeoutError:
            farm.error = f"no answer within {self.timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError, RecursionError) as exc:
            farm.error = str(exc) or type(exc).__name__
        else:
            farm.doc, farm.answered_at, farm.error = doc, time.time(), None
        finally:
            farm.read_at = time.monotonic()

    async def close(self) -> None:
        for farm in self.farms:
            if farm.reading is not None:
                farm.reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await farm.reading
        if self._http is not None:
            await self._http.close()
