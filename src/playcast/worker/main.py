"""The worker program: one game, streamed to one player at a time.

Lifecycle (PROTOCOL.md, "Worker lifecycle"): connect to the signaling server,
``register``, answer pings, and wait while available. A ``session_start``
brings up one WebRTC peer connection (video from the backend, an ``input``
data channel from the player). When the session ends, for any reason, the
worker closes everything, acknowledges, resets the game and starts over as a
new worker. When the server dies, the worker reconnects with backoff; when
the game dies, it leaves the pool at once and comes back once it is healthy.

This module is the command line (``playcast worker``); the layers below it,
top down: ``worker/runner.py`` (``Worker``, the asyncio layer that carries
out the link core's effects), ``worker/session.py`` (one player's peer
connection), ``worker/media.py`` (backend packets into aiortc), and
``worker/link.py`` (the lifecycle's rules, with no I/O).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket

from playcast.envflags import add_flag, env_name
from playcast.logs import setup_logging
from playcast.protocol import WORKER_NAME_PATTERN
from playcast.worker.backends import BACKENDS, add_backend_arguments, create_backend
from playcast.worker.link_events import DrainRequested
from playcast.worker.link_log import log_event
from playcast.worker.link_state import LinkSettings
from playcast.worker.rate_control import RateSettings
from playcast.worker.runner import Worker, WorkerSettings

log = logging.getLogger("playcast.worker")

# Finish the session in progress, then exit instead of registering again.
DRAIN_SIGNAL = signal.SIGUSR1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, dl = WorkerSettings(), LinkSettings()
    add_flag(parser, "--server", default=d.server, help="signaling server base address")
    add_flag(parser, "--game", default=dl.game, help="the game this worker serves")
    add_flag(parser, "--backend", default="synthetic", choices=sorted(BACKENDS), help="backend")
    for flag, default, help_text in (
        ("--backoff-base", dl.backoff_base, "first retry delay ceiling (server and game), s"),
        ("--backoff-cap", dl.backoff_cap, "retry delay cap, s"),
        ("--restart-delay", dl.restart_delay, "pause offline between sessions, s"),
        ("--register-timeout", dl.register_timeout, "wait for connect and registered, s"),
        ("--health-interval", dl.health_interval, "backend health poll while idle, s"),
        ("--stable-after", dl.stable_after, "healthy this long ends a game's failure streak, s"),
    ):
        add_flag(parser, flag, type=float, default=default, help=help_text)
    add_flag(
        parser,
        "--playout-delay",
        type=int,
        default=d.playout_delay_ms,
        help="ms the browser may hold a frame (RTP playout-delay); negative: not sent",
    )
    add_flag(
        parser,
        "--input-limit",
        type=int,
        default=d.input_limit,
        help="input events waiting for the game before the session ends (moves coalesce)",
    )
    add_flag(
        parser,
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (default: off; 0: any free port)",
    )
    add_flag(parser, "--metrics-host", default=d.metrics_host, help="address for --metrics-port")
    for flag, default, help_text in (
        ("--max-bitrate", d.rate.max_bitrate, "the video's highest bit rate, whatever the link"),
        ("--min-bitrate", d.rate.min_bitrate, "the video's lowest bit rate, whatever the link"),
    ):
        add_flag(parser, flag, type=int, default=default, help=help_text + " (bit/s)")
    no_audio = env_name("--no-audio")
    parser.add_argument(
        "--no-audio",
        action="store_true",
        default=os.environ.get(no_audio, "").lower() in ("1", "true", "yes"),
        help=f"video only: do not capture or send the game's sound (env {no_audio}=1)",
    )
    add_flag(parser, "--worker-token", help="shared secret the server asks workers for")
    add_flag(parser, "--advertise-addr", help="addr to report in register (default: socket's)")
    parser.add_argument(
        "--name",
        default=os.environ.get("PLAYCAST_WORKER_NAME"),
        help="this worker's name, kept across its restarts (what an operator drains it by; "
        "env PLAYCAST_WORKER_NAME; default: the phone's serial for --backend android, "
        "else HOST-PID)",
    )
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    add_backend_arguments(parser)


def worker_name(args: argparse.Namespace) -> str:
    """``--name``, else the phone's serial (Android), else this host and process."""
    if args.name:
        if not re.match(WORKER_NAME_PATTERN, args.name) or len(args.name) > 64:
            raise SystemExit(f"--name {args.name!r}: at most 64 letters, digits and ._:@- please")
        return str(args.name)
    name = None
    if args.backend == "android":
        name = getattr(args, "serial", None) or os.environ.get("ANDROID_SERIAL")
    if not name:
        name = f"{socket.gethostname()[:50]}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9._:@-]", "-", name)[:64]


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        server=args.server,
        link=LinkSettings(
            game=args.game,
            name=worker_name(args),
            addr=args.advertise_addr,
            backoff_base=args.backoff_base,
            backoff_cap=args.backoff_cap,
            restart_delay=args.restart_delay,
            register_timeout=args.register_timeout,
            health_interval=args.health_interval,
            stable_after=args.stable_after,
        ),
        token=args.worker_token or None,
        playout_delay_ms=args.playout_delay if args.playout_delay >= 0 else None,
        input_limit=args.input_limit,
        audio=not args.no_audio,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        rate=rate_settings(args),
    )


def rate_settings(args: argparse.Namespace) -> RateSettings:
    start = RateSettings().start_bitrate
    try:
        return RateSettings(args.min_bitrate, args.max_bitrate, start)
    except ValueError as exc:
        raise SystemExit(f"worker: {exc}") from None


async def _main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    backend = create_backend(args.backend, args)
    worker = Worker(settings, backend)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    loop.add_signal_handler(DRAIN_SIGNAL, lambda: worker.post(DrainRequested()))
    game = settings.link.game
    log_event(
        "worker_starting",
        f"worker starting: server={settings.url} game={game} backend={args.backend} "
        f"name={settings.link.name}",
        backend=args.backend,
        serial=getattr(args, "serial", None),  # the Android backend's phone
        game=game,
        drain_signal=DRAIN_SIGNAL.name,
        name=settings.link.name,
    )
    await worker.run()
    log.info("worker stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    # aiortc and aioice log every RTP hiccup at INFO; the lifecycle is what matters here.
    for noisy in ("aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return asyncio.run(_main(args))
