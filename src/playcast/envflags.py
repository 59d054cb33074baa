"""Command-line flags that also read a ``PLAYCAST_…`` environment variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any


def env_name(flag: str) -> str:
    return "PLAYCAST_" + flag.lstrip("-").replace("-", "_").upper()


def add_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    type: Callable[[str], Any] = str,
    default: Any = None,
    help: str = "",
    **kwargs: Any,
) -> None:
    """``--flag`` whose default comes from ``PLAYCAST_FLAG`` when that is set."""
    name = env_name(flag)
    raw = os.environ.get(name)
    value = type(raw) if raw is not None else default
    parser.add_argument(
        flag, type=type, default=value, help=f"{help} (env {name}; default: %(default)s)", **kwargs
    )


def env_list(flag: str) -> list[str]:
    """A repeatable flag's environment default: whitespace-separated values."""
    return os.environ.get(env_name(flag), "").split()


def add_list_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    type: Callable[[str], Any] = str,
    help: str,
) -> None:
    """A repeatable ``--flag``; ``PLAYCAST_FLAG`` gives whitespace-separated defaults."""
    parser.add_argument(
        flag,
        dest=flag.lstrip("-").replace("-", "_"),
        action="append",
        type=type,
        default=[type(v) for v in env_list(flag)],
        help=f"{help}, repeatable (env {env_name(flag)}, whitespace-separated)",
    )
