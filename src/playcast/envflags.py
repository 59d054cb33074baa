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
    type: Callable[[str], Any] = str,  # noqa: A002 - mirrors argparse
    default: Any = None,
    help: str = "",  # noqa: A002
    **kwargs: Any,
) -> None:
    """``--flag`` whose default comes from ``PLAYCAST_FLAG`` when that is set."""
    name = env_name(flag)
    raw = os.environ.get(name)
    value = type(raw) if raw is not None else default
    parser.add_argument(
        flag, type=type, default=value, help=f"{help} (env {name}; default: %(default)s)", **kwargs
    )
