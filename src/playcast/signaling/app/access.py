"""Who may observe the server (/api/status, /metrics): loopback, or the
bearer of ``--status-token``. A request that names someone it was forwarded
for (``X-Forwarded-For``, ``Forwarded``) came through a proxy, from anywhere:
it is never a loopback observer, whether or not its proxy is trusted."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from playcast.signaling.rules.settings import Settings
from playcast.signaling.sockets.server import token_ok


def may_observe(request: web.Request, settings: Settings) -> bool:
    token = settings.status_token
    if token and token_ok(
        request.headers.get("Authorization", ""), request.query.get("token", ""), token
    ):
        return True
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    host = request.remote or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
