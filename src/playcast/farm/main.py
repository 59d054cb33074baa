"""``playcast farm``: a worker for every phone plugged into this host.

The farm follows adb's device list live and keeps one supervisor per phone
it has seen (``farm/phone.py``), each running that phone's worker as its own
process. It does no media itself and never imports the media stack: its own
work is reading adb's list, the workers' log lines and, every
``--phone-health-interval``, one health reading per phone.

Workers are forked by the farm's zygote (``farm/zygote.py``), one process
that has imported the worker's media stack once.

SIGTERM or SIGINT stops every worker (their sessions end, players told),
then the zygote, then the farm exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from typing import Any

from aiohttp import web

from playcast.farm import settings as fs
from playcast.farm.devices import DeviceRow
from playcast.farm.events import event
from playcast.farm.metrics import FarmCollector, serve, status_doc
from playcast.farm.phone import Phone
from playcast.farm.tracker import DeviceTracker
from playcast.farm.zygote import Zygote, ZygoteError
from playcast.logs import setup_logging

log = logging.getLogger("playcast.farm")


class Farm:
    def __init__(self, settings: fs.FarmSettings) -> None:
        self.settings = settings
        self.phones: dict[str, Phone] = {}
        self.tracker = DeviceTracker(settings.adb, self._on_list)
        self.zygote = Zygote(settings.python, fs.worker_env())
        self.stop = asyncio.Event()
        self.fatal: str | None = None
        self.started_at = time.time()
        self.metrics_port: int | None = None
        self._ignored: set[str] = set()

    def _on_list(self, rows: dict[str, DeviceRow]) -> None:
        for serial, row in rows.items():
            if not self.settings.selected(serial):
                if serial not in self._ignored:
                    self._ignored.add(serial)
                    event("phone_ignored", serial=serial)
                continue
            phone = self.phones.get(serial)
            if phone is None:
                phone = Phone(serial, self.settings, self.zygote, self._on_fatal)
                self.phones[serial] = phone
                phone.start()
            phone.update(row)
        for serial, phone in self.phones.items():
            if serial not in rows:
                phone.update(None)

    def _on_fatal(self, detail: str) -> None:
        if self.fatal is None:
            self.fatal = detail
            log.error("stopping the farm: %s", detail)
            self.stop.set()

    def adb_status(self) -> dict[str, Any]:
        t = self.tracker
        return {
            "tracking": t.connected,
            "restarts": t.restarts,
            "lists": t.lists,
            "last_error": t.last_error or None,
        }

    def status(self) -> dict[str, Any]:
        doc = status_doc(self.phones.values(), self.adb_status(), self.started_at)
        doc.update(server=self.settings.server, game=self.settings.game)
        doc["zygote"] = {"pid": self.zygote.pid, "starts": self.zygote.starts}
        return doc

    async def _warm_zygote(self) -> None:
        try:
            await self.zygote.start()
        except ZygoteError as exc:  # the first worker wanted tries again
            log.error("%s", exc)

    async def run(self) -> int:
        s = self.settings
        runner: web.AppRunner | None = None
        if s.metrics_port is not None:
            collector = FarmCollector(
                lambda: list(self.phones.values()), lambda: self.tracker.restarts
            )
            runner, self.metrics_port = await serve(
                collector, self.status, s.metrics_host, s.metrics_port
            )
        event(
            "farm_started",
            server=s.server,
            game=s.game,
            adb=s.adb,
            metrics_port=self.metrics_port,
        )
        # Warm before the first phone wants a worker (and again whenever one does).
        warming = asyncio.create_task(self._warm_zygote(), name="zygote")
        tracking = asyncio.create_task(self.tracker.run(), name="adb-tracker")
        try:
            await self.stop.wait()
        finally:
            tracking.cancel()
            warming.cancel()
            await asyncio.gather(tracking, warming, return_exceptions=True)
            await asyncio.gather(*(p.close() for p in self.phones.values()), return_exceptions=True)
            await self.zygote.close()
            if runner is not None:
                await runner.cleanup()
            event("farm_stopped", phones=len(self.phones))
        return 2 if self.fatal is not None else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fs.add_arguments(parser)


async def _main(args: argparse.Namespace) -> int:
    farm = Farm(fs.settings_from_args(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, farm.stop.set)
    return await farm.run()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    return asyncio.run(_main(args))
