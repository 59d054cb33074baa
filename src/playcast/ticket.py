"""``playcast ticket``: mint a join ticket, as a site does for each play
(docs/admission.md), for trying a server started with ``--join-secret``.

    playcast ticket --secret-file secrets.txt --sub alice --url http://localhost:8080/

prints a ticket (or, with ``--url``, the link that carries it) signed HS256
with the secret, valid for ``--ttl`` seconds and for one play.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlencode

import jwt

from playcast import joinsecrets
from playcast.envflags import env_list
from playcast.protocol import DEFAULT_GAME


def mint(
    secret: str,
    sub: str,
    game: str = DEFAULT_GAME,
    ttl: float = 60.0,
    now: float | None = None,
    **claims: Any,
) -> str:
    """A ticket for one play of ``game`` by ``sub``, valid from ``now`` (wall
    clock, default the time) for ``ttl`` seconds; ``claims`` add to or
    replace the usual ones."""
    start = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "sub": sub,
        "game": game,
        "iat": start,
        "nbf": start,
        "exp": start + int(ttl),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode({**body, **claims}, secret, algorithm="HS256")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret",
        help="the secret to sign with (env PLAYCAST_JOIN_SECRET, its first: the server's)",
    )
    parser.add_argument(
        "--secret-file", help="sign with the first secret in this file (one a line, # comments)"
    )
    parser.add_argument("--sub", required=True, help="the player's identity, shown in the logs")
    parser.add_argument("--game", default=DEFAULT_GAME, help="the game (default: %(default)s)")
    parser.add_argument(
        "--ttl", type=float, default=60.0, help="seconds it stays valid (default: %(default)s)"
    )
    parser.add_argument("--url", help="print the page's link with the ticket, e.g. http://host/")


def run(args: argparse.Namespace) -> int:
    try:
        if args.secret:
            given = [args.secret]
        elif args.secret_file:
            given = joinsecrets.read_file(args.secret_file)[:1]
        else:
            given = env_list("--join-secret")[:1]
        if not given:
            raise ValueError("no secret: --secret, --secret-file or PLAYCAST_JOIN_SECRET")
        (secret,) = joinsecrets.checked(given)
    except ValueError as exc:
        print(f"playcast ticket: {exc}", file=sys.stderr)
        return 2
    token = mint(secret, args.sub, args.game, args.ttl)
    if args.url:
        sep = "&" if "?" in args.url else "?"
        print(f"{args.url}{sep}{urlencode({'ticket': token})}")
    else:
        print(token)
    return 0
