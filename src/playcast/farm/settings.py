"""The farm's settings, its command line, and each worker's command line.

Every flag also reads a ``PLAYCAST_…`` variable. The workers inherit the
farm's environment, so a worker setting (``PLAYCAST_SCRCPY_SERVER``,
``PLAYCAST_WORKER_TOKEN``…) in the farm's environment file reaches every
phone's worker; worker flags can also follow ``--`` on the command line.
What differs per phone (the serial) or belongs to the farm alone (its
metrics port, the log format the farm reads) is set by the farm and kept out
of the workers' environment.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Final

from playcast.envflags import add_flag, env_name
from playcast.farm.states import Limits
from playcast.protocol import DEFAULT_GAME

# The farm's own flags that share a name (and so a variable) with a worker's,
# with another meaning: never inherited by a worker.
FARM_ONLY_ENV: Final = tuple(
    env_name(flag)
    for flag in ("--metrics-port", "--metrics-host", "--serial", "--log-format", "--log-level")
)


@dataclass(frozen=True, slots=True)
class FarmSettings:
    server: str = "ws://127.0.0.1:8080"
    game: str = DEFAULT_GAME
    adb: str = "adb"
    serials: frozenset[str] = frozenset()  # empty: every phone
    skip_serials: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    health_interval: float = 30.0  # a reading every this many seconds, and between sessions
    health_timeout: float = 15.0
    # The game backoff, as the worker's: restarts of a worker that exits.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    stable_after: float = 60.0  # a worker that ran this long starts its streak over
    stop_timeout: float = 10.0  # a stopped worker's grace before its group is killed
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "info"
    worker_args: tuple[str, ...] = ()
    python: str = sys.executable  # the zygote's, and so every worker's

    def selected(self, serial: str) -> bool:
        if serial in self.skip_serials:
            return False
        return not self.serials or serial in self.serials


def worker_argv(s: FarmSettings, serial: str) -> list[str]:
    """``playcast worker …`` (what follows ``playcast``): the operator's worker
    flags first, then what the farm decides (later flags win, so those cannot
    be overridden)."""
    level = "debug" if s.log_level.lower() == "debug" else "info"
    return [
        "worker",
        *s.worker_args,
        "--backend", "android",
        "--serial", serial,
        "--name", serial,  # one per phone, whatever the environment says
        "--server", s.server,
        "--game", s.game,
        "--adb", s.adb,
        "--backoff-base", repr(s.backoff_base),
        "--backoff-cap", repr(s.backoff_cap),
        "--stable-after", repr(s.stable_after),
        "--log-format", "json",
        "--log-level", level,
    ]  # fmt: skip


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in FARM_ONLY_ENV:
        env.pop(name, None)
    return env


def _serial_list(text: str) -> frozenset[str]:
    return frozenset(s for s in re.split(r"[,\s]+", text) if s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, dl = FarmSettings(), Limits()
    add_flag(parser, "--server", default=d.server, help="signaling server base address")
    add_flag(parser, "--game", default=d.game, help="the game every phone's worker serves")
    add_flag(parser, "--adb", default=d.adb, help="adb executable (the workers use it too)")
    add_flag(parser, "--serials", default="", help="only these phones (comma or space separated)")
    add_flag(parser, "--skip-serials", default="", help="never these phones")
    add_flag(
        parser,
        "--max-battery-temp",
        type=float,
        default=dl.max_temp_c,
        help="°C above which a phone leaves the pool after its session",
    )
    add_flag(
        parser,
        "--battery-temp-hysteresis",
        type=float,
        default=dl.temp_hysteresis_c,
        help="°C below --max-battery-temp a hot phone must cool to before it returns",
    )
    add_flag(
        parser,
        "--min-battery",
        type=float,
        default=dl.min_battery,
        help="battery %% below which a phone leaves the pool after its session",
    )
    add_flag(
        parser,
        "--battery-hysteresis",
        type=float,
        default=dl.battery_hysteresis,
        help="battery %% above --min-battery a phone must charge to before it returns",
    )
    for flag, default, help_text in (
        ("--phone-health-interval", d.health_interval, "seconds between phone health readings"),
        ("--phone-health-timeout", d.health_timeout, "seconds one health reading may take"),
        ("--backoff-base", d.backoff_base, "first restart delay ceiling of a failing worker, s"),
        ("--backoff-cap", d.backoff_cap, "restart delay cap, s"),
        ("--stable-after", d.stable_after, "a worker running this long starts its streak over, s"),
        ("--stop-timeout", d.stop_timeout, "seconds a stopping worker gets before it is killed"),
    ):
        add_flag(parser, flag, type=float, default=default, help=help_text)
    add_flag(
        parser,
        "--metrics-port",
        type=int,
        help="serve /metrics and /status on this port (default: off; 0: any free port)",
    )
    add_flag(parser, "--metrics-host", default=d.metrics_host, help="address for --metrics-port")
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    add_flag(
        parser,
        "--worker-args",
        default="",
        help="more flags for every worker, as one shell-quoted string (or after --)",
    )
    parser.add_argument(
        "worker_flags",
        nargs=argparse.REMAINDER,
        help="after --: flags passed to every `playcast worker`",
    )


def settings_from_args(args: argparse.Namespace) -> FarmSettings:
    extra = list(args.worker_flags)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return FarmSettings(
        server=args.server,
        game=args.game,
        adb=args.adb,
        serials=_serial_list(args.serials),
        skip_serials=_serial_list(args.skip_serials),
        limits=Limits(
            max_temp_c=args.max_battery_temp,
            temp_hysteresis_c=args.battery_temp_hysteresis,
            min_battery=args.min_battery,
            battery_hysteresis=args.battery_hysteresis,
        ),
        health_interval=args.phone_health_interval,
        health_timeout=args.phone_health_timeout,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        stable_after=args.stable_after,
        stop_timeout=args.stop_timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        log_level=args.log_level,
        worker_args=(*shlex.split(args.worker_args), *extra),
    )
