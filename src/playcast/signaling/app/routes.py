"""The server's HTTP side (aiohttp): the page, /healthz, /api/status,
/metrics, and the hand-off of a late WebSocket upgrade to the sockets.

The signaling sockets themselves never come here (``sockets.server`` takes
them before aiohttp sees a byte), only a connection that fetched something
first and then upgrades (``sockets.handoff``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from redis.exceptions import RedisError

from playcast.signaling.app import admin
from playcast.signaling.app.access import may_observe
from playcast.signaling.app.metrics import Metrics
from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.sockets.handoff import FRONT_KEY, late_upgrade
from playcast.signaling.sockets.server import ROLES, Front

STATIC_DIR = Path(str(resources.files("playcast") / "web" / "static"))
METRICS_KEY = web.AppKey("metrics", Metrics)


class Observed(Protocol):
    """What the routes read of the cluster layer (a cluster of one or many)."""

    async def status(self, check: bool) -> dict[str, Any]:
        """Every node's snapshot, merged; with ``check``, the broken invariants."""

    def health(self) -> dict[str, Any]:
        """What /healthz adds about the cluster."""


OBSERVED_KEY = web.AppKey("observed", Observed)


async def healthz(request: web.Request) -> web.Response:
    """200 while taking new peers, 503 while not (for load balancers, open
    to all); the node's id and counts only to observers."""
    front = request.app[FRONT_KEY]
    hub = front.hub
    ok = front.serving
    body: dict[str, Any] = {"ok": ok}
    if may_observe(request, hub.settings):
        body.update(workers=len(hub.workers), clients=len(hub.clients), node=hub.node)
        body.update(request.app[OBSERVED_KEY].health())
    return web.json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    hub = request.app[FRONT_KEY].hub
    if not may_observe(request, hub.settings):
        raise web.HTTPForbidden(text="loopback or --status-token only")
    check = bool(request.query.get("check"))
    if request.query.get("scope") != "node":
        try:
            return web.json_response(await request.app[OBSERVED_KEY].status(check))
        except (RedisError, OSError) as exc:
            raise web.HTTPServiceUnavailable(text=f"cluster status needs Redis: {exc!r}") from None
    doc = hub.snapshot()
    if check:  # for tests and operators: any broken invariant, in words
        doc["violations"] = list(hub.check_invariants())
    return web.json_response(doc)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[FRONT_KEY].hub
    if not may_observe(request, hub.settings):
        raise web.HTTPForbidden(text="loopback or --status-token only")
    body = request.app[METRICS_KEY].render(hub.node if hub.settings.redis else None)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _no_stale_page(request: web.Request, response: web.StreamResponse) -> None:
    # The page's modules must never outlive an upgrade next to a new index.html:
    # the browser revalidates them (cheap: 304 by ETag/Last-Modified).
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"


def make_app(
    front: Front, observed: ClusterLink | LocalCluster, metrics_: Metrics
) -> web.Application:
    app = web.Application()
    app[FRONT_KEY] = front
    app[OBSERVED_KEY] = observed
    app[METRICS_KEY] = metrics_
    for path in ROLES:
        app.router.add_get(path, late_upgrade)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/status", status)
    app.router.add_get("/", index)
    admin.add_routes(app, front, observed)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_response_prepare.append(_no_stale_page)
    return app
