"""Who is the client: the socket peer, or what a trusted proxy says it is.

Exactly one header is believed, ``CLIENT_IP_HEADER`` (``X-Forwarded-For`` or
``X-Real-IP``), and only when the socket peer is inside ``TRUSTED_PROXIES``;
any other forwarding header a client sends is never read, so a client
cannot pick its address behind a proxy that sets the other one.

``X-Forwarded-For`` (every line, joined) is walked from the right past
trusted addresses; the first untrusted address is the client. An entry that
is not an IP address (``unknown``, garbage) ends the walk at the address
before it: whatever is left of it may be the client's own words. Entries
left of the first untrusted address are never read. ``X-Real-IP`` is the
proxy's own statement of the client. IPv6 clients are counted per /64 (one
subscriber usually holds a whole /64), see ``limit_key``.

The server must hand over the real socket peer: see ``gateway.serving``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CLIENT_IP_HEADERS = ("X-Forwarded-For", "X-Real-IP")


@lru_cache(maxsize=8)
def _trusted(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _parse(value: str) -> IPAddress | None:
    value = value.strip().strip('"')
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:443"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_ip(peer: str | None, header_lines: Iterable[str] = ()) -> str:
    """The client's address given the socket peer and every line of ``CLIENT_IP_HEADER``."""
    peer_address = _parse(peer or "")
    if peer_address is None:
        return "0.0.0.0"  # noqa: S104 (a placeholder address, never bound)
    trusted = _trusted(tuple(settings.TRUSTED_PROXIES))
    if not trusted or not any(peer_address in network for network in trusted):
        return str(peer_address)
    if settings.CLIENT_IP_HEADER == "X-Real-IP":
        lines = list(header_lines)
        # One value from the proxy; several lines mean someone else added one.
        stated = _parse(lines[0]) if len(lines) == 1 else None
        return str(stated or peer_address)
    entries = [entry for line in header_lines for entry in line.split(",")]
    client: IPAddress | None = None
    for entry in reversed(entries):
        address = _parse(entry)
        if address is None:
            break  # not an address: what is left of it cannot be believed
        client = address
        if not any(address in network for network in trusted):
            break
    return str(client or peer_address)


def client_ip_from_scope(scope: Mapping[str, Any]) -> str:
    """Client address of an ASGI HTTP scope (the lean handler)."""
    peer = scope.get("client")
    wanted = settings.CLIENT_IP_HEADER.lower().encode("latin-1")
    lines = [value.decode("latin-1") for name, value in scope["headers"] if name == wanted]
    return client_ip(peer[0] if peer else None, lines)


def client_ip_from_request(request: HttpRequest) -> str:
    """Client address of a Django request (every line of a header arrives joined)."""
    meta_key = "HTTP_" + settings.CLIENT_IP_HEADER.upper().replace("-", "_")
    value = request.META.get(meta_key)
    return client_ip(request.META.get("REMOTE_ADDR"), [value] if value else [])


@lru_cache(maxsize=65536)  # parsed several times per request; clients repeat
def limit_key(ip: str) -> str:
    """The identity an address is counted under: itself for IPv4, its /64 for IPv6."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:  # ::ffff:203.0.113.7 is that IPv4 client, not ::/64
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ip
