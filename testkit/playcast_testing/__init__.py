"""Test and benchmark helpers that drive the real programs (no mocks)."""
