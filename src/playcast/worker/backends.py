"""Which game backends a worker can run, found by name.

A backend module provides ``create_backend(args) -> GameBackend`` and may
provide ``add_arguments(parser)`` for its own flags. Modules are imported
lazily, so a backend whose dependencies are missing only fails when chosen.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from types import ModuleType

from playcast.backends.base import GameBackend

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "synthetic": "playcast.backends.synthetic",
    "android": "playcast.backends.android",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[name])


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    for name in BACKENDS:
        try:
            module = _load(name)
        except ImportError as exc:
            log.debug("backend %s unavailable: %s", name, exc)
            continue
        add = getattr(module, "add_arguments", None)
        if add is None:
            continue
        try:
            add(parser)
        except argparse.ArgumentError as exc:  # two backends claiming one flag
            log.warning("backend %s flags skipped: %s", name, exc)


def create_backend(name: str, args: argparse.Namespace) -> GameBackend:
    module = _load(name)
    factory = getattr(module, "create_backend", None)
    if factory is None:
        raise SystemExit(f"backend {name!r} ({module.__name__}) has no create_backend(args)")
    backend = factory(args)
    if not isinstance(backend, GameBackend):
        raise SystemExit(f"backend {name!r} did not return a GameBackend")
    return backend
