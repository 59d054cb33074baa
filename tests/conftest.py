"""Shared fixtures. Every test that needs a server starts a real one."""

from __future__ import annotations
