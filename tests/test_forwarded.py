"""Behind a reverse proxy: whose address a request is (``--trusted-proxy``),
and who may observe the server (issue 25)."""

from __future__ import annotations

import aiohttp
import pytest
from playcast_testing.servers import running_server
from test_server_limits import _request_from

from playcast.signaling.app.access import may_observe
from playcast.signaling.rules.settings import Settings
from playcast.signaling.sockets import http

PROXY = http.parse_networks(["127.0.0.1/32", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("remote", "headers", "trusted", "client"),
    [
        # No proxy trusted: the TCP peer, whatever the headers say.
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, (), "127.0.0.1"),
        # A trusted proxy: the address it names.
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, PROXY, "203.0.113.7"),
        # Proxies append: the last address not a trusted proxy is the client,
        # whatever the client itself put in front.
        ("127.0.0.1", {"x-forwarded-for": "1.2.3.4, 203.0.113.7, 10.1.2.3"}, PROXY, "203.0.113.7"),
        # A peer that is not a trusted proxy is believed about nothing.
        ("198.51.100.9", {"x-forwarded-for": "203.0.113.7"}, PROXY, "198.51.100.9"),
        # RFC 7239, with ports and IPv6.
        ("127.0.0.1", {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}, PROXY, "2001:db8::1"),
        ("127.0.0.1", {"forwarded": "for=192.0.2.60:80, for=10.0.0.5"}, PROXY, "192.0.2.60"),
        # What is not an address ends the chain: the proxy itself is all we know.
        ("127.0.0.1", {"x-forwarded-for": "unknown"}, PROXY, "127.0.0.1"),
        # Only trusted proxies named: the first of them.
        ("127.0.0.1", {"x-forwarded-for": "10.0.0.7, 10.0.0.8"}, PROXY, "10.0.0.7"),
    ],
)
def test_the_clients_own_address(
    remote: str, headers: dict[str, str], trusted: http.Networks, client: str
) -> None:
    assert http.client_address(remote, headers, trusted) == client


def test_a_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        http.parse_networks(["10.0.0.0/8", "not-an-ip"])


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
@pytest.mark.parametrize("trusted", [(), ("127.0.0.1",)])
def test_a_forwarded_request_is_never_a_loopback_observer(
    header: str, trusted: tuple[str, ...]
) -> None:
    settings = Settings(trusted_proxies=trusted, status_token="peek")
    value = "for=127.0.0.1" if header == "Forwarded" else "127.0.0.1"
    assert not may_observe(_request_from("127.0.0.1", {header: value}), settings)
    # The token still opens it, from anywhere.
    with_token = {header: value, "Authorization": "Bearer peek"}
    assert may_observe(_request_from("127.0.0.1", with_token), settings)


async def test_the_per_address_cap_counts_the_clients_behind_a_trusted_proxy() -> None:
    async with (
        running_server(trusted_proxy="127.0.0.1/32", max_connections_per_ip=1) as server,
        aiohttp.ClientSession() as session,
    ):
        url = server.ws_url("client")
        first = await session.ws_connect(url, headers={"X-Forwarded-For": "203.0.113.1"})
        second = await session.ws_connect(url, headers={"X-Forwarded-For": "203.0.113.2"})
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, headers={"X-Forwarded-For": "203.0.113.1"})
        assert refused.value.status == 429
        await server.wait_for_log(r"client_refused remote=203\.0\.113\.1 ")
        await first.close()
        await second.close()
