"""Join secrets (issue 27, docs/admission.md) as the command lines take them:
on the command line, from a file read at start (one a line, ``#`` comments),
from the environment; each at least 32 bytes, as HS256 wants a key at least
as long as its hash (RFC 7518, section 3.2)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MIN_BYTES = 32


def read_file(path: str) -> list[str]:
    """The secrets in ``path``: one a line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the join secrets in {path}: {exc}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def checked(secrets: Iterable[str]) -> tuple[str, ...]:
    """The secrets, each long enough (ValueError otherwise, never quoting one)."""
    out = tuple(dict.fromkeys(secrets))
    for n, secret in enumerate(out, 1):
        size = len(secret.encode())
        if size < MIN_BYTES:
            raise ValueError(
                f"join secret #{n} is {size} bytes: HS256 needs at least {MIN_BYTES} "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return out
