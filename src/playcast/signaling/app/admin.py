"""The operator page (issue 26): ``/admin``, and the API it calls.

The page itself loads for anyone (it holds nothing); everything it asks
needs ``--status-token``, sent as ``Authorization: Bearer TOKEN`` and never
accepted from a cookie or the query, so another site cannot make a browser
act here (a cross-site request cannot set that header). No token set: the
API is off. Unlike ``/api/status``, loopback is not enough: these act.

- ``GET /api/admin/state``: the fleet (``app/fleet.py``): nodes, workers
  and sessions cluster-wide, held names, lines, and the farms' phones,
  read now (``app/farms.py``).
- ``POST /api/admin/workers/{name or id}/drain`` | ``undrain`` | ``restart``:
  drain holds the worker's name out of the pool until undrained, a busy
  worker finishing its session first (``rules/admin.py``); restart shuts
  the worker down, on whichever node holds it.
"""

from __future__ import annotations

import hmac
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from playcast.protocol import WORKER_NAME_PATTERN
from playcast.signaling.app.farms import FarmWatch
from playcast.signaling.app.fleet import fleet
from playcast.signaling.cluster.admin import shared_view
from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.rules.events import event
from playcast.signaling.sockets.server import Front

PAGE = Path(str(resources.files("playcast") / "web" / "static" / "admin" / "index.html"))
ACTIONS = ("drain", "undrain", "restart")


class Admin:
    def __init__(self, front: Front, cluster: ClusterLink | LocalCluster) -> None:
        self.front = front
        self.cluster = cluster
        self.farms = FarmWatch(front.hub.settings.farms)


ADMIN_KEY = web.AppKey("admin", Admin)


def add_routes(app: web.Application, front: Front, cluster: ClusterLink | LocalCluster) -> None:
    app[ADMIN_KEY] = Admin(front, cluster)
    app.router.add_get("/admin", page)
    app.router.add_get("/api/admin/state", state)
    app.router.add_post("/api/admin/workers/{ref}/{action}", act)
    app.on_cleanup.append(_close)


async def _close(app: web.Application) -> None:
    await app[ADMIN_KEY].farms.close()


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


def _refused(request: web.Request) -> web.Response | None:
    """403 unless the request carries the status token as a bearer header."""
    token = request.app[ADMIN_KEY].front.hub.settings.status_token
    if not token:
        why = "the operator page is off: start the server with --status-token"
    else:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
            return None
        why = "the status token is required (Authorization: Bearer TOKEN)"
    return _error(403, why)


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status, headers={"Cache-Control": "no-store"})


async def _status(admin: Admin) -> dict[str, Any]:
    return await admin.cluster.status(False)


async def state(request: web.Request) -> web.Response:
    if (refused := _refused(request)) is not None:
        return refused
    admin = request.app[ADMIN_KEY]
    try:
        doc = await _status(admin)
        shared = await shared_view(admin.cluster, admin.front.hub.games)
    except (RedisError, OSError) as exc:
        return _error(503, f"the cluster's state needs Redis: {exc!r}")
    farms = await admin.farms.read()
    body = fleet(doc, shared, farms, time.time())
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def act(request: web.Request) -> web.Response:
    if (refused := _refused(request)) is not None:
        return refused
    admin = request.app[ADMIN_KEY]
    front, hub = admin.front, admin.front.hub
    action, ref = request.match_info["action"], request.match_info["ref"]
    if action not in ACTIONS:
        return _error(404, f"no such action {action!r}: {', '.join(ACTIONS)}")
    if not front.serving:
        return _error(503, "this node cannot act now (stopping, or cut off from the cluster)")
    try:
        doc = await _status(admin)
    except (RedisError, OSError) as exc:
        return _error(503, f"the cluster's state needs Redis: {exc!r}")
    # A worker by its id, else every worker of that name (a name may have
    # none connected right now: it can still be drained and undrained).
    workers = [w for w in doc["workers"] if w["id"] == ref]
    by_id = bool(workers)
    workers = workers or [w for w in doc["workers"] if w.get("name") == ref]
    ids = [w["id"] for w in workers]
    event("admin_action", action=action, ref=ref, workers=",".join(ids), remote=request.remote)
    if action == "restart":
        if not workers:
            return _error(404, f"no worker {ref!r} is connected")
        for w in workers:
            front.step(hub.restart_worker, w["id"], w["node"])
        await admin.cluster.settle()
        return web.json_response({"action": action, "workers": ids}, status=202)
    name = (workers[0].get("name") or "") if by_id else ref
    if not name:
        return _error(409, f"worker {ref} sent no name: it cannot be drained (restart it instead)")
    if len(name) > 64 or not re.match(WORKER_NAME_PATTERN, name):
        return _error(400, "a worker name is at most 64 letters, digits and ._:@-")
    front.step(hub.hold, name, action == "drain")
    await admin.cluster.settle()
    return web.json_response({"action": action, "name": name, "workers": ids}, status=202)
