"""The server's command line: every flag of ``playcast server`` (each also
read from its environment variable) and the settings made from them."""

from __future__ import annotations

import argparse

import msgspec

from playcast import joinsecrets
from playcast.envflags import add_flag, add_list_flag
from playcast.protocol import IceServer
from playcast.signaling.rules.settings import Settings


def redacted(url: str | None) -> str | None:
    """A Redis URL for the log, without its password."""
    if url is None:
        return None
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if sep else url


def parse_ice_server(text: str) -> IceServer:
    """``stun:host:port`` or a JSON object ``{"urls": [...], "username": ..., ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return msgspec.json.decode(text, type=IceServer)
        except msgspec.DecodeError as exc:
            raise argparse.ArgumentTypeError(f"bad ICE server JSON: {exc}") from None
    if not text.startswith(("stun:", "stuns:", "turn:", "turns:")):
        raise argparse.ArgumentTypeError(f"ICE server must be a stun:/turn: URL or JSON: {text!r}")
    return IceServer(urls=[text])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    add_flag(parser, "--host", default=d.host, help="address to listen on")
    add_flag(parser, "--port", type=int, default=d.port, help="port (0 picks a free one)")
    for name, help_text in (
        ("heartbeat_interval", "seconds between server pings"),
        ("heartbeat_timeout", "seconds without a pong before a peer is dead"),
        ("inactivity_timeout", "seconds without client input before the session ends"),
        ("inactivity_warning", "warn the client this many seconds before (0: off)"),
        ("handshake_timeout", "seconds for the WebRTC handshake to complete"),
        ("shutdown_ack_timeout", "seconds to wait for shutdown_ack"),
        ("hello_timeout", "seconds a new socket has to send register or join"),
    ):
        flag = "--" + name.replace("_", "-")
        add_flag(parser, flag, type=float, default=getattr(d, name), help=help_text)
    for name, kind, help_text in (
        ("max_message_rate", float, "messages a second a peer may send before it is a flood"),
        ("max_message_burst", float, "messages a peer may send at once"),
        ("max_send_queue_bytes", int, "unsent bytes to a peer before it is closed as not reading"),
        ("max_connections_per_ip", int, "open sockets per remote address (0: no cap)"),
    ):
        flag = "--" + name.replace("_", "-")
        add_flag(parser, flag, type=kind, default=getattr(d, name), help=help_text)
    add_list_flag(
        parser,
        "--ice-server",
        type=parse_ice_server,
        help="STUN/TURN server for both peers: a URL or a JSON object with urls, username, "
        "credential",
    )
    add_list_flag(
        parser,
        "--turn-url",
        help="TURN URL given per-session REST credentials from --turn-secret",
    )
    add_flag(parser, "--turn-secret", help="coturn static-auth-secret for TURN REST credentials")
    add_flag(parser, "--turn-ttl", type=float, default=d.turn_ttl, help="TURN credential lifetime")
    add_flag(parser, "--redis", help="join a cluster: redis://HOST:PORT/DB (off: a lone server)")
    add_flag(parser, "--node-id", help="this node's id in the cluster (default: made up at start)")
    add_flag(
        parser,
        "--node-ttl",
        type=float,
        default=d.node_ttl,
        help="seconds a node that stops renewing its liveness is taken for alive",
    )
    add_flag(
        parser,
        "--cluster-gather",
        type=float,
        default=d.cluster_gather,
        help="seconds a busy node gathers what it sends Redis into one round trip (0: none)",
    )
    add_flag(
        parser,
        "--resume-grace",
        type=float,
        default=d.resume_grace,
        help="seconds a session waits for a member whose socket dropped to resume (0: off)",
    )
    add_flag(
        parser,
        "--queue-limit",
        type=int,
        default=d.queue_limit,
        help="clients that may wait in line for a worker (0: reject at once)",
    )
    add_flag(
        parser,
        "--queue-timeout",
        type=float,
        default=d.queue_timeout,
        help="seconds a client may wait in line",
    )
    add_flag(
        parser,
        "--games",
        default=",".join(d.games),
        help="comma-separated games this server hosts; others are refused (unknown_game)",
    )
    add_list_flag(
        parser,
        "--trusted-proxy",
        help="a reverse proxy (address or CIDR) whose X-Forwarded-For/Forwarded are believed "
        "(default: none)",
    )
    add_list_flag(
        parser,
        "--farm",
        help="a phone farm's status address (playcast farm --metrics-port: http://HOST:PORT) "
        "for the operator page /admin",
    )
    add_flag(parser, "--worker-token", help="shared secret workers must present (off if unset)")
    add_list_flag(
        parser,
        "--join-secret",
        help="let in only players whose join carries a ticket signed HS256 with this secret "
        "(32 bytes or more; docs/admission.md; default: open to all), several for rotation",
    )
    add_flag(
        parser,
        "--join-secret-file",
        help="a file of join secrets, one a line, # comments, read at start (with --join-secret)",
    )
    add_flag(
        parser,
        "--ticket-max-age",
        type=float,
        default=d.ticket_max_age,
        help="seconds a join ticket may live at most (exp - iat)",
    )
    add_flag(
        parser,
        "--ticket-leeway",
        type=float,
        default=d.ticket_leeway,
        help="seconds a site's clock may be off from this server's, either way",
    )
    add_flag(
        parser,
        "--status-token",
        help="bearer token that opens /api/status and /metrics beyond loopback, and the "
        "operator page /admin (off if unset)",
    )
    add_flag(parser, "--tls-cert", help="PEM certificate: serve HTTPS and WSS")
    add_flag(parser, "--tls-key", help="PEM private key for --tls-cert")
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    # Hidden, for tests and cycle hunts: the collector off, SIGUSR1 logs what
    # one collection finds (gcpolicy.report).
    parser.add_argument("--debug-gc", action="store_true", help=argparse.SUPPRESS)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        inactivity_timeout=args.inactivity_timeout,
        inactivity_warning=args.inactivity_warning,
        handshake_timeout=args.handshake_timeout,
        shutdown_ack_timeout=args.shutdown_ack_timeout,
        hello_timeout=args.hello_timeout,
        games=tuple(g.strip() for g in args.games.split(",") if g.strip()),
        max_connections_per_ip=args.max_connections_per_ip,
        status_token=args.status_token or None,
        trusted_proxies=tuple(args.trusted_proxy),
        farms=tuple(args.farm),
        redis=args.redis or None,
        node_id=args.node_id or None,
        node_ttl=args.node_ttl,
        cluster_gather=args.cluster_gather,
        queue_limit=args.queue_limit,
        resume_grace=args.resume_grace,
        queue_timeout=args.queue_timeout,
        ice_servers=tuple(args.ice_server),
        max_message_rate=args.max_message_rate,
        max_message_burst=args.max_message_burst,
        max_send_queue_bytes=args.max_send_queue_bytes,
        turn_secret=args.turn_secret or None,
        turn_urls=tuple(args.turn_url),
        turn_ttl=args.turn_ttl,
        worker_token=args.worker_token or None,
        join_secrets=join_secrets(args),
        ticket_max_age=args.ticket_max_age,
        ticket_leeway=args.ticket_leeway,
    )


def join_secrets(args: argparse.Namespace) -> tuple[str, ...]:
    """--join-secret, each given, and those in --join-secret-file (SystemExit
    if the file cannot be read or a secret is too short)."""
    try:
        from_file = joinsecrets.read_file(args.join_secret_file) if args.join_secret_file else []
        return joinsecrets.checked([*args.join_secret, *from_file])
    except ValueError as exc:
        raise SystemExit(f"--join-secret: {exc}") from None
