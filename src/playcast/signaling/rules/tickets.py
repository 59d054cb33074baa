"""Join tickets (``--join-secret``, issue 27): the site decides who plays; the
server checks the site's signature and the ticket's claims, nothing more.

A ticket is a JWT signed HS256 with one of the configured secrets, with the
claims ``sub`` (the player's identity), ``game``, ``iat``, ``nbf``, ``exp`` and
``jti`` (docs/admission.md). PyJWT reads the compact form and checks the
signature, once however many secrets there are (``_KeyRing``: HS256 tried
with each, for rotation). The claims are decoded here and their times
checked against the core's wall clock: PyJWT reads a clock of its own, which
a test cannot set. Single use is the shared state's: the ``jti`` travels in
the join's ``Pair`` (``records.Pair``), spent only when the join is admitted.

Imported only by a server with tickets on (``Hub``): PyJWT and the
cryptography package it loads cost a tenth of a second at start.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Annotated

import msgspec
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidSignatureError,
    InvalidTokenError,
)

from playcast.signaling.rules.events import TICKET_TEXT as DETAIL
from playcast.signaling.rules.events import TicketWhy as Why

# An identity or a ticket id: shown in log lines, a key in the shared state.
# No spaces or control characters, so no ticket can forge a log line.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\s\x00-\x1f\x7f]+$")]


class Claims(msgspec.Struct):
    """The claims a ticket must carry (others are ignored)."""

    sub: _Name
    game: Annotated[str, msgspec.Meta(max_length=200)]
    iat: float
    nbf: float
    exp: float
    jti: _Name


@dataclass(frozen=True, slots=True)
class Verdict:
    """A ticket checked: admitted (``why`` None) or refused, and why.
    ``sub`` is known once the signature holds (a refusal after it names the
    player in the log). ``until``: its ``jti`` stays spent until then (its
    ``exp`` plus the leeway, wall clock): after that it is refused as expired."""

    sub: str = ""
    jti: str = ""
    until: float = 0.0
    why: Why | None = None
    detail: str = ""


class _KeyRing(HMACAlgorithm):
    """PyJWT's HS256, verifying against every configured secret in turn."""

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        for secret in secrets:  # PyJWT's own checks, once, at start
            if super().check_key_length(super().prepare_key(secret)):
                raise ValueError(f"a join secret is {len(secret)} bytes: HS256 needs 32 or more")
        self.secrets = secrets

    # Per ticket, PyJWT prepares and measures the key it is passed: the
    # ring's secrets are the keys, checked once above.
    def prepare_key(self, key: str | bytes) -> bytes:
        return b""

    def check_key_length(self, key: bytes) -> str | None:
        return None

    def verify(self, msg: bytes, key: bytes, sig: bytes) -> bool:
        return any(HMACAlgorithm.verify(self, msg, secret, sig) for secret in self.secrets)


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


class _Jws(PyJWS):
    """PyJWT's JWS, its base64url segment rule checked in C.

    PyJWT 2.15 checks each segment's alphabet byte by byte in Python (its
    ``_decode_base64url_segment``: GHSA-hxm8-2xgr-2p9m): most of a ticket's
    check, over issue 27's 30 µs a join. The same rule, with the alphabet
    check one ``bytes.translate``; ``tests/test_hub_tickets.py`` holds it to
    PyJWT's own on random segments (and fails if PyJWT drops the method)."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (
            padding > 2
            or (padding and len(segment) % 4)
            or len(stripped) % 4 == 1
            or stripped.translate(None, _ALPHABET)
        ):
            raise DecodeError(f"Invalid {name} padding")
        # base64's urlsafe_* are these binascii calls behind three Python frames each.
        try:
            decoded = binascii.a2b_base64(
                stripped.translate(_TO_STANDARD) + b"=" * (-len(stripped) % 4)
            )
        except binascii.Error as err:
            raise DecodeError(f"Invalid {name} padding") from err
        if binascii.b2a_base64(decoded, newline=False).translate(_TO_URLSAFE).rstrip(b"=") != (
            stripped
        ):
            raise DecodeError(f"Invalid {name} padding")
        return decoded


class TicketCheck:
    """Checks a join's ticket: the signature, the claims, the times, the game."""

    def __init__(self, secrets: tuple[str, ...], *, max_age: float, leeway: float) -> None:
        if not secrets:
            raise ValueError("tickets need at least one secret")
        self.max_age, self.leeway = max_age, leeway
        ring = _KeyRing(tuple(s.encode() for s in secrets))
        self._jws = _Jws(algorithms=[])  # HS256 only: the ring
        self._jws.register_algorithm("HS256", ring)
        self._claims = msgspec.json.Decoder(Claims)

    def check(self, token: str | None, game: str, now: float) -> Verdict:
        """``token`` for a join to ``game`` at ``now`` (wall-clock seconds)."""
        if not token:
            return refused("missing")
        try:
            # The keys are the ring's: the one passed here is not used.
            signed = self._jws.decode_complete(token, key=b"-", algorithms=["HS256"])
            claims = self._claims.decode(signed["payload"])
        except InvalidSignatureError:
            return refused("bad_signature")
        except InvalidAlgorithmError:
            return refused("bad_signature", "the ticket is not signed HS256")
        except (InvalidTokenError, msgspec.DecodeError) as exc:  # PyJWT's, or the claims'
            return refused("malformed", f"{DETAIL['malformed']} ({exc})")
        wrong = self._wrong(claims, game, now)
        if wrong is not None:
            return Verdict(claims.sub, why=wrong[0], detail=wrong[1])
        return Verdict(claims.sub, claims.jti, claims.exp + self.leeway)

    def _wrong(self, claims: Claims, game: str, now: float) -> tuple[Why, str] | None:
        """What is wrong with a well-signed ticket's times or game, if anything:
        a clock ``leeway`` apart from the site's either way is tolerated."""
        leeway = self.leeway
        if now > claims.exp + leeway:
            return "expired", f"the ticket expired {now - claims.exp:.0f} s ago"
        if max(claims.nbf, claims.iat) > now + leeway:
            return "not_yet_valid", DETAIL["not_yet_valid"]
        if claims.exp - claims.iat > self.max_age:
            lives = claims.exp - claims.iat
            return "too_long_lived", f"the ticket lives {lives:.0f} s, over {self.max_age:.0f} s"
        if claims.game != game:
            return "wrong_game", DETAIL["wrong_game"]
        return None


def refused(why: Why, detail: str = "") -> Verdict:
    return Verdict(why=why, detail=detail or DETAIL[why])
