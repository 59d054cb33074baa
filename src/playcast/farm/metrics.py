"""The farm's ``/metrics`` (Prometheus) and ``/status`` (JSON), on ``--metrics-port``.

Both are read from the phones' supervisors at request time, so they cost
nothing between scrapes. ``playcast_devices{state}`` lists every state, with
0 for the empty ones, so a dashboard's sum never misses a series; the
per-phone gauges are there only while the phone's reading has the value.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from playcast.farm.phone import Phone
from playcast.farm.states import State


class FarmCollector(Collector):
    def __init__(self, phones: Callable[[], Iterable[Phone]], tracker_restarts: Callable[[], int]):
        self.phones = phones
        self.tracker_restarts = tracker_restarts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        phones = list(self.phones())
        counts = Counter(p.state for p in phones)
        devices = GaugeMetricFamily(
            "playcast_devices", "Phones on this farm host, by state", labels=["state"]
        )
        for state in State:
            devices.add_metric([state.value], counts[state])
        yield devices
        gauges = {
            "battery_percent": GaugeMetricFamily(
                "playcast_device_battery_percent", "Battery level (last reading)", labels=["serial"]
            ),
            "temperature_c": GaugeMetricFamily(
                "playcast_device_temperature_celsius",
                "Battery temperature (last reading)",
                labels=["serial"],
            ),
            "storage_free_bytes": GaugeMetricFamily(
                "playcast_device_storage_free_bytes", "Free space on /data", labels=["serial"]
            ),
            "charging": GaugeMetricFamily(
                "playcast_device_charging",
                "1 while on USB, AC or wireless power",
                labels=["serial"],
            ),
        }
        for phone in phones:
            health = phone.health
            if health is None:
                continue
            for name, gauge in gauges.items():
                value = getattr(health, name)
                if value is not None:
                    gauge.add_metric([phone.serial], float(value))
        yield from gauges.values()
        restarts = CounterMetricFamily(
            "playcast_farm_worker_restarts",
            "Workers restarted after an exit the farm did not ask for",
            labels=["serial"],
        )
        for phone in phones:
            restarts.add_metric([phone.serial], phone.restarts)
        yield restarts
        tracker = CounterMetricFamily(
            "playcast_farm_adb_tracker_restarts", "Times adb track-devices was started again"
        )
        tracker.add_metric([], self.tracker_restarts())
        yield tracker


def status_doc(phones: Iterable[Phone], adb: dict[str, Any], started_at: float) -> dict[str, Any]:
    listed = sorted(phones, key=lambda p: p.serial)
    counts = Counter(p.state.value for p in listed)
    return {
        "host": socket.gethostname(),
        "time": round(time.time(), 3),
        "started_at": round(started_at, 3),
        "adb": adb,
        "states": {state.value: counts[state.value] for state in State},
        "phones": [p.snapshot() for p in listed],
    }


async def serve(
    collector: FarmCollector, status: Callable[[], dict[str, Any]], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """``GET /metrics`` and ``GET /status``; the runner (to clean up) and the bound port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def status_page(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps(status()), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
