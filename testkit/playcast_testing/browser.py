"""Debian's headless Chromium as the tests and benchmarks launch it."""

from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("PLAYCAST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless, as root in CI, on a machine with no network beyond loopback: no
# background services phoning home, and media may play without a gesture.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
