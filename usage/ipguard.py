"""Who is the client: the socket peer, or what trusted proxies say it is.

``X-Forwarded-For`` is believed only when the socket peer is inside
``TRUSTED_PROXIES``; then the header (every line, joined) is walked from the
right past trusted addresses, skipping entries that are not IP addresses,
and the first untrusted address is the client. A client cannot inject an
address by sending its own header: entries left of the first untrusted one
are never read. A trusted proxy that sends ``X-Real-IP`` instead (nginx's
usual ``proxy_set_header X-Real-IP $remote_addr``) is believed too, when
there is no usable ``X-Forwarded-For``. IPv6 clients are counted per /64
(one subscriber usually holds a whole /64), see ``limit_key``.
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


def client_ip(
    peer: str | None, forwarded_for: Iterable[str] = (), real_ip: str | None = None
) -> str:
    """The client's address given the socket peer, every X-Forwarded-For line and X-Real-IP."""
    peer_address = _parse(peer or "")
    if peer_address is None:
        return "0.0.0.0"  # noqa: S104 (a placeholder address, never bound)
    trusted = _trusted(tuple(settings.TRUSTED_PROXIES))
    if not trusted or not any(peer_address in network for network in trusted):
        return str(peer_address)
    entries = [entry for line in forwarded_for for entry in line.split(",")]
    client: IPAddress | None = None
    for entry in reversed(entries):
        address = _parse(entry)
        if address is None:
            continue  # garbage between proxies: skip it, keep walking
        client = address
        if not any(address in network for network in trusted):
            break
    if client is None:
        client = _parse(real_ip or "") or peer_address
    return str(client)


def client_ip_from_scope(scope: Mapping[str, Any]) -> str:
    """Client address of an ASGI HTTP scope (the lean handler)."""
    peer = scope.get("client")
    forwarded: list[str] = []
    real_ip = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-real-ip":
            real_ip = value.decode("latin-1")
    return client_ip(peer[0] if peer else None, forwarded, real_ip)


def client_ip_from_request(request: HttpRequest) -> str:
    """Client address of a Django request (every line of the header arrives joined)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return client_ip(
        request.META.get("REMOTE_ADDR"),
        [forwarded] if forwarded else [],
        request.META.get("HTTP_X_REAL_IP"),
    )


@lru_cache(maxsize=65536)  # parsed several times per request; clients repeat
def limit_key(ip: str) -> str:
    """The identity an address is counted under: itself for IPv4, its /64 for IPv6."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:  # ::ffff:203.0.113.7 is that IPv4 client, not ::/64
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ip
