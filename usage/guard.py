"""The IP guard and the registration limit: building blocks of the HTTP face.

* ``check_ip``: 403 ``ip_blocked`` for addresses inside a ``BlockedNetwork``
  (kept per process, reloaded only when the store's epoch moves: no database
  query per request) or blocked after too many failed authentications. One
  store round trip.
* ``record_auth_failure``: counts failures per IP (IPv6 per /64) in a
  rolling hour; at ``AUTH_FAILURES_PER_IP_PER_HOUR`` the IP is blocked for
  ``IP_BLOCK_MINUTES``.
* ``admit_registration``: ``REGISTRATIONS_PER_IP_PER_HOUR`` in a rolling
  hour (one-minute buckets, see ``usage.windows``).

Every function raises a ``GatewayError`` (``StoreUnavailable`` when the store
does not answer).
"""

from __future__ import annotations

import ipaddress
import logging
import math

from django.conf import settings
from django.db import DatabaseError

from gateway.core import clock
from gateway.core.client_ip import Network, limit_key
from gateway.core.errors import ServiceUnavailable
from gateway.core.loops import StampedCache
from gateway.core.store import EPOCH_KEY, stored_version
from usage.backends import get_backend
from usage.backends.base import LIVE_KEY, Expected, IpBlock, ip_block_key, registration_key
from usage.errors import IpBlocked, RegistrationRateLimited
from usage.http import iso8601
from usage.models import BlockedNetwork
from usage.windows import HOUR

logger = logging.getLogger(__name__)

__all__ = [
    "IpBlock",
    "admit_registration",
    "check_ip",
    "lift_ip_block",
    "list_ip_blocks",
    "record_auth_failure",
]


def _identity(ip: str) -> str:
    try:
        return limit_key(ip)
    except ValueError:
        return ip


def _load_networks() -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(cidr, strict=False)
        for cidr in BlockedNetwork.objects.values_list("cidr", flat=True)
    )


_blocklist: StampedCache[tuple[Network, ...]] = StampedCache(_load_networks)


def forget_cached_blocklist() -> None:
    """Drop this process's copy of the blocklist (tests)."""
    _blocklist.clear()


async def _blocked_networks(stamp: object) -> tuple[Network, ...]:
    try:
        return await _blocklist.get(stamp)
    except DatabaseError:
        cached = _blocklist.peek()
        if cached is None:
            raise ServiceUnavailable(retry_after=5) from None
        logger.warning("blocklist reload failed (database); keeping the previous one")
        return cached[1]


def cached_view(ip: str) -> tuple[int, Expected] | None:
    """(epoch, what vouches for it) when this process's blocklist, as cached,
    lets ``ip`` through; None when nothing is cached or it does not.

    For the hot path's admission from caches (``usage.limits.Expectation``):
    the store confirms that the epoch and the live marker's generation the
    blocklist was loaded at still hold and that the address has no block.
    """
    cached = _blocklist.peek()
    if cached is None:
        return None
    stamp, networks = cached
    if not isinstance(stamp, tuple):
        return None
    epoch: int
    generation: str
    epoch, generation = stamp
    if networks and _in_networks(ip, networks):
        return None
    return epoch, (
        (ip_block_key(_identity(ip)), ""),
        (LIVE_KEY, generation),
        (EPOCH_KEY, stored_version(epoch)),
    )


def _in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def prefetch_keys(ip: str) -> list[str]:
    """What ``check_ip`` will read, so the hot path can fetch it with its other reads."""
    return get_backend().ip_lookup_keys(_identity(ip))


async def check_ip(ip: str) -> None:
    """Raise ``IpBlocked`` (403) if the client address may not use the gateway."""
    identity = _identity(ip)
    stamp, blocked_until = await get_backend().ip_lookup(identity)
    networks = await _blocked_networks(stamp)
    if networks and _in_networks(ip, networks):
        raise IpBlocked()
    now = clock.now()
    if blocked_until is not None and blocked_until > now:
        raise IpBlocked(retry_after=math.ceil(blocked_until - now))


async def record_auth_failure(ip: str) -> None:
    """Count a failed authentication from ``ip``; block it at the hourly limit."""
    identity = _identity(ip)
    blocked_until = await get_backend().auth_failure(
        identity,
        HOUR,
        settings.AUTH_FAILURES_PER_IP_PER_HOUR,
        clock.now(),
        settings.IP_BLOCK_MINUTES * 60,
    )
    if blocked_until is not None:
        logger.warning(
            "blocked %s for %d minutes after %d failed authentications in an hour",
            identity,
            settings.IP_BLOCK_MINUTES,
            settings.AUTH_FAILURES_PER_IP_PER_HOUR,
        )


async def admit_registration(ip: str) -> None:
    """Count a registration from ``ip``, or raise ``RegistrationRateLimited`` (429)."""
    now = clock.now()
    limit = settings.REGISTRATIONS_PER_IP_PER_HOUR
    result = await get_backend().window_hit(registration_key(_identity(ip)), HOUR, limit, now)
    if not result.admitted:
        raise RegistrationRateLimited(
            retry_after=max(1, math.ceil(result.reset_at - now)),
            limit=limit,
            window="1 hour",
            resetAt=iso8601(result.reset_at),
        )


def list_ip_blocks() -> list[IpBlock]:
    """IPs (or IPv6 /64s) currently blocked for failed authentications (admin, sync)."""
    return get_backend().list_ip_blocks_sync(clock.now())


def lift_ip_block(ip: str) -> bool:
    """Unblock an IP and forget its failures (admin, sync); False if it was not blocked."""
    return get_backend().lift_ip_block_sync(_identity(ip))
