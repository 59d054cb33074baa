"""The signaling server's settings: every flag of ``playcast server``."""

from __future__ import annotations

from dataclasses import dataclass

from playcast.protocol import DEFAULT_GAME, IceServer


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    inactivity_timeout: float = 120.0
    inactivity_warning: float = 20.0
    handshake_timeout: float = 20.0
    shutdown_ack_timeout: float = 5.0
    # A socket must say register or join within this (a socket that never
    # says who it is would otherwise hold a slot forever).
    hello_timeout: float = 10.0
    # The games this server hosts: anything else is refused before it can
    # create state (queues, metric label children).
    games: tuple[str, ...] = (DEFAULT_GAME,)
    # The waiting line (opt-in): clients beyond this many waiting are
    # rejected; 0 keeps the seed's rule (no worker free: rejected at once).
    queue_limit: int = 0
    queue_timeout: float = 300.0
    # Cluster: the Redis URL (None: a lone server, state in memory), this
    # node's id (None: made up at start), and how long a node that stops
    # renewing its liveness key is taken for alive.
    redis: str | None = None
    node_id: str | None = None
    node_ttl: float = 2.0
    # A busy node writes to Redis at most once per this many seconds; what
    # comes meanwhile rides along (an idle node waits for nothing). Longer:
    # less CPU a setup on every node and on Redis, more wait on each of a
    # handshake's crossings (docs/cluster.md#sizing).
    cluster_gather: float = 0.004
    # Seconds a session waits for a member whose socket dropped, to resume
    # (0: the seed's rule, a dropped socket is a dead peer).
    resume_grace: float = 0.0
    # Open sockets per remote address; 0: no cap.
    max_connections_per_ip: int = 0
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For / Forwarded
    # are believed: the per-address cap and the logs then use the client's
    # own address. Empty: no forwarding header is believed.
    trusted_proxies: tuple[str, ...] = ()
    # /api/status and /metrics answer loopback, and requests carrying this
    # bearer token; None: loopback only. The operator page's API (/admin)
    # answers only this token, as a bearer header: off without it.
    status_token: str | None = None
    # Phone farms whose /status the operator page shows (``playcast farm
    # --metrics-port``), each a base URL.
    farms: tuple[str, ...] = ()
    # Empty: host candidates are enough on a LAN or loopback; internet
    # deployments pass --ice-server (STUN/TURN), see docs/deploy.md.
    ice_servers: tuple[IceServer, ...] = ()
    # Flood limits: far above any honest peer (a browser coalesces input to a
    # few messages a second), far below what would hurt other sessions.
    max_message_rate: float = 100.0
    max_message_burst: float = 400.0
    max_error_rate: float = 5.0
    max_error_burst: float = 50.0
    # A peer whose unsent messages pass this many bytes is not reading: it is
    # closed rather than allowed to grow the server's memory.
    max_send_queue_bytes: int = 1 << 20
    # TURN REST: per-session credentials from a secret shared with coturn.
    turn_secret: str | None = None
    turn_urls: tuple[str, ...] = ()
    turn_ttl: float = 6 * 3600.0
    # Workers must present this (Authorization: Bearer) to connect; None: open.
    worker_token: str | None = None
    # Join tickets (docs/admission.md): with secrets, every join must carry a
    # JWT signed HS256 with one of them (several: rotation); none, open to all.
    join_secrets: tuple[str, ...] = ()
    # A ticket may live this long (exp - iat) at most; clocks this far apart
    # from the site's, either way, are tolerated.
    ticket_max_age: float = 300.0
    ticket_leeway: float = 30.0
