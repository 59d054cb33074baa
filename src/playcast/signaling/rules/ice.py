"""ICE servers handed to both peers of a session, with TURN REST credentials.

TURN REST (coturn's ``use-auth-secret``): the username is ``EXPIRY:NAME`` and
the password ``base64(HMAC-SHA1(secret, username))``, so the TURN server can
check it with the shared secret alone and it stops working at EXPIRY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from playcast.protocol import IceServer
from playcast.signaling.rules.settings import Settings


def turn_rest_credentials(secret: str, name: str, expires_at: int) -> tuple[str, str]:
    username = f"{expires_at}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(settings: Settings, session_id: str, now_unix: float) -> list[IceServer]:
    servers = list(settings.ice_servers)
    if settings.turn_secret and settings.turn_urls:
        username, credential = turn_rest_credentials(
            settings.turn_secret, session_id, int(now_unix + settings.turn_ttl)
        )
        servers.append(
            IceServer(urls=list(settings.turn_urls), username=username, credential=credential)
        )
    return servers
