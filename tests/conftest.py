"""Shared fixtures. Every test that needs a server starts a real one."""

from __future__ import annotations

# The browser tests' fixtures and their screenshot-on-failure hook.
pytest_plugins = ["browser_support"]
