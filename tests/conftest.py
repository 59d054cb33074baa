"""Shared fixtures. Every test that needs a server starts a real one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playcast_testing.peer import collecting_peers

# The browser tests' fixtures and their screenshot-on-failure hook.
pytest_plugins = ["browser_support"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "peer_errors(*codes): server error codes a test's TestPeers may receive"
    )


@pytest.fixture(autouse=True)
def _test_peers_got_no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test peer collects every ``error`` the server sends it; a passing test
    whose players were answered with errors it did not expect must fail."""
    marker = request.node.get_closest_marker("peer_errors")
    allowed = marker.args if marker else ()
    with collecting_peers() as peers:
        yield
    for peer in peers:
        peer.assert_no_errors(*allowed)
