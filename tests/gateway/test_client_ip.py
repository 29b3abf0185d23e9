"""Who the client is: the socket peer, or what trusted proxies say."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from pytest_django import Settings

from gateway.core.client_ip import (
    client_ip,
    client_ip_from_request,
    client_ip_from_scope,
    limit_key,
)

CLIENT = "198.51.100.23"


@pytest.fixture
def behind_proxy(settings: Settings) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


def test_without_trusted_proxies_the_client_is_the_socket_peer(settings: Settings) -> None:
    settings.TRUSTED_PROXIES = []
    assert client_ip("203.0.113.7", ["1.2.3.4"]) == "203.0.113.7"


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(behind_proxy: None) -> None:
    assert client_ip("203.0.113.7", ["1.2.3.4, 10.0.0.1"]) == "203.0.113.7"


def test_a_trusted_proxys_forwarded_for_is_believed(behind_proxy: None) -> None:
    assert client_ip("10.0.0.2", [CLIENT]) == CLIENT


def test_addresses_a_client_prepends_are_never_read(behind_proxy: None) -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; our proxy appended what it saw.
    assert client_ip("10.0.0.2", [f"1.2.3.4, {CLIENT}"]) == CLIENT


def test_the_header_is_walked_from_the_right_past_every_trusted_proxy(behind_proxy: None) -> None:
    assert client_ip("10.0.0.2", [f"1.2.3.4, {CLIENT}, 10.9.9.9, 10.0.0.5"]) == CLIENT


def test_several_header_lines_are_read_as_one_list(behind_proxy: None) -> None:
    assert client_ip("10.0.0.2", ["1.2.3.4", f"{CLIENT}, 10.0.0.5"]) == CLIENT


def test_an_entry_that_is_not_an_address_ends_the_walk_at_the_address_before_it(
    behind_proxy: None,
) -> None:
    # Whatever is left of "unknown" may be the client's own words.
    assert client_ip("10.0.0.2", [f"1.2.3.4, {CLIENT}, unknown, 10.0.0.5"]) == "10.0.0.5"
    assert client_ip("10.0.0.2", [f"1.2.3.4, {CLIENT}, , 198.51.100.99"]) == "198.51.100.99"
    # Nothing believable at all: the proxy itself.
    assert client_ip("10.0.0.2", [f"{CLIENT}, unknown"]) == "10.0.0.2"


def test_ports_brackets_and_quotes_are_understood(behind_proxy: None) -> None:
    assert client_ip("10.0.0.2", [f"{CLIENT}:443"]) == CLIENT
    assert client_ip("10.0.0.2", ['"[2001:db8::7]:8443"']) == "2001:db8::7"


def test_an_ipv4_mapped_address_is_the_ipv4_client(behind_proxy: None) -> None:
    assert client_ip("::ffff:10.0.0.2", [CLIENT]) == CLIENT
    assert client_ip("::ffff:203.0.113.7", [CLIENT]) == "203.0.113.7"


def test_a_header_of_only_trusted_addresses_gives_the_leftmost(behind_proxy: None) -> None:
    assert client_ip("10.0.0.2", ["10.1.1.1, 10.0.0.5"]) == "10.1.1.1"


def test_with_x_real_ip_the_proxys_one_value_is_believed(
    behind_proxy: None, settings: Settings
) -> None:
    settings.CLIENT_IP_HEADER = "X-Real-IP"
    assert client_ip("10.0.0.2", [CLIENT]) == CLIENT
    assert client_ip("10.0.0.2", ["garbage"]) == "10.0.0.2"
    assert client_ip("10.0.0.2", [CLIENT, "1.2.3.4"]) == "10.0.0.2"  # someone added a line
    assert client_ip("203.0.113.7", [CLIENT]) == "203.0.113.7"  # not from a trusted proxy


def test_a_missing_or_unparsable_peer_is_a_placeholder_address() -> None:
    assert client_ip(None, [CLIENT]) == "0.0.0.0"
    assert client_ip("unix-socket", []) == "0.0.0.0"


def test_the_asgi_scope_and_the_django_request_give_the_same_answer(behind_proxy: None) -> None:
    scope = {
        "client": ("10.0.0.2", 51000),
        "headers": [
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-for", f"{CLIENT}, 10.0.0.7".encode()),
        ],
    }
    assert client_ip_from_scope(scope) == CLIENT
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"1.2.3.4, {CLIENT}, 10.0.0.7"
    )
    assert client_ip_from_request(request) == CLIENT
    # Only the configured header is read: X-Real-IP is a client's here.
    scope = {"client": ("10.0.0.2", 51000), "headers": [(b"x-real-ip", CLIENT.encode())]}
    assert client_ip_from_scope(scope) == "10.0.0.2"
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_REAL_IP=CLIENT)
    assert client_ip_from_request(request) == "10.0.0.2"


def test_with_x_real_ip_configured_a_clients_forwarded_for_is_never_read(
    behind_proxy: None, settings: Settings
) -> None:
    settings.CLIENT_IP_HEADER = "X-Real-IP"
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-real-ip", CLIENT.encode())]
    assert client_ip_from_scope({"client": ("10.0.0.2", 51000), "headers": headers}) == CLIENT
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_X_REAL_IP=CLIENT
    )
    assert client_ip_from_request(request) == CLIENT


def test_ipv6_clients_are_counted_per_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"


def test_ipv4_clients_are_counted_per_address() -> None:
    assert limit_key("203.0.113.7") == "203.0.113.7"
    assert limit_key("::ffff:203.0.113.7") == "203.0.113.7"
