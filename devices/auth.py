"""Device authentication for every /v1 endpoint (SPEC section 2, "Authentication").

Credentials are ``X-Device-ID`` + ``X-Session-Token``, or ``Authorization:
Bearer <token>`` (the token alone names its device, so OpenAI SDKs work).

The hot path must not query the database, yet must honour a revoke on the
very next request in every process. So each process caches what it read
about a device, keyed by token hash, together with the device's version and
the global epoch from the shared store (``gateway.core.store.read_versions``: one
Redis round trip). Services bump the version on commit; an entry whose
versions moved is reloaded (one query). An entry is trusted only when those
versions were read *before* the database row: a change committed between
the two reads would otherwise be cached with its own, newer version and
never noticed. A bearer token seen for the first time names its device
only once the row is read, so that first answer is served but not trusted;
the next request, knowing the device id, reads versions then the row (with
``X-Device-ID`` the first request can already do that). Entries also
expire after ``CACHE_MAX_AGE_SECONDS`` (a safety net for a lost bump, e.g. a
Redis restart that happens to restore an equal version).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, NoReturn, cast

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from devices import activity
from devices.errors import DevicePendingApproval, DeviceRejected, DeviceSuspended, iso_z
from devices.models import Device
from devices.selectors import device_for_token_hash
from devices.services import CACHE_MAX_AGE_SECONDS
from devices.suspicious import note_device_ip_soon
from devices.tokens import looks_like_device_id, looks_like_token, token_hash
from gateway.core import clock
from gateway.core.db import run_sync
from gateway.core.errors import AuthenticationFailed
from gateway.core.store import EPOCH_KEY, device_version_key, read_versions, stored_version
from usage import guard
from usage.backends.base import Expected
from usage.types import Tier, as_tier

logger = logging.getLogger(__name__)

Status = Device.Status
MAX_CACHED_DEVICES = 100_000


@dataclass(frozen=True)
class AuthenticatedDevice:
    id: str
    name: str
    status: str
    tier: Tier
    owner_id: str | None  # the key the per-user limit counts under
    owner_name: str | None


@dataclass(frozen=True)
class _Entry:
    device: AuthenticatedDevice  # status is the stored one; see _admit
    suspended_until: datetime | None
    suspension_reason: str
    versions: tuple[int, int] | None  # None: read after the row, not trusted
    loaded_at: float  # time.monotonic()


_entries: dict[str, _Entry] = {}


def clear_cache() -> None:
    _entries.clear()


async def authenticate(headers: Mapping[str, str], *, ip: str) -> AuthenticatedDevice:
    """The approved device these credentials belong to, or a 401/403 GatewayError.

    ``headers`` maps lower-cased names to values. Raises AuthenticationFailed
    (401), DevicePendingApproval / DeviceRejected / DeviceSuspended (403),
    StoreUnavailable or ServiceUnavailable (503).
    """
    credentials = _credentials(headers)
    if credentials is None:
        await _refuse(ip)
    token, claimed_id = credentials
    entry = await _lookup(token_hash(token), claimed_id)
    if entry is None or not _answers(entry, claimed_id):
        await _refuse(ip)
    activity.record(entry.device.id, ip)  # pending and suspended devices too
    device = _admit(entry)
    note_device_ip_soon(device.id, ip)
    return device


def record_use(device_id: str, ip: str) -> None:
    """What ``authenticate`` leaves behind, for a caller that used ``cached_device``."""
    activity.record(device_id, ip)
    # Counting distinct IPs may cost a store round trip (a new device/IP
    # pair only): it runs beside the request, not before it.
    note_device_ip_soon(device_id, ip)


def cached_device(
    headers: Mapping[str, str],
) -> tuple[AuthenticatedDevice, int, Expected] | None:
    """The approved device these credentials name, the epoch its cache entry
    was checked at and what vouches for the entry, from this process's cache alone.

    None when the cache cannot answer by itself: no trusted, fresh entry, or
    one ``authenticate`` would refuse. Only for a caller that has the store
    confirm those versions before acting (``usage.limits.Expectation``), and
    that calls ``record_use`` once it has.
    """
    credentials = _credentials(headers)
    if credentials is None:
        return None
    token, claimed_id = credentials
    entry = _entries.get(token_hash(token))
    if entry is None or entry.versions is None or not _is_fresh(entry):
        return None
    if not _answers(entry, claimed_id):
        return None
    try:
        device = _admit(entry)
    except (DevicePendingApproval, DeviceRejected, DeviceSuspended):
        return None
    device_version, epoch = entry.versions
    # Any change to the device bumps its version; any configuration change the epoch.
    return (
        device,
        epoch,
        (
            (device_version_key(device.id), stored_version(device_version)),
            (EPOCH_KEY, stored_version(epoch)),
        ),
    )


def prefetch_keys(headers: Mapping[str, str]) -> list[str]:
    """What ``authenticate`` will read from the store, for the hot path's one prefetch.

    The device is known without a round trip when its token is cached (or
    it names itself with X-Device-ID); otherwise there is nothing to prefetch.
    """
    credentials = _credentials(headers)
    if credentials is None:
        return []
    token, claimed_id = credentials
    entry = _entries.get(token_hash(token))
    device_id = entry.device.id if entry is not None else claimed_id
    if device_id is None:
        return []
    return [device_version_key(device_id), EPOCH_KEY]


def _credentials(headers: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(token, claimed device id) from either header style, or None when unusable."""
    authorization = headers.get("authorization")
    session_token = headers.get("x-session-token")
    device_id = headers.get("x-device-id")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or (session_token is not None and session_token != token):
            return None
    elif session_token is not None and device_id is not None:
        token = session_token.strip()
    else:
        return None
    if not looks_like_token(token):
        return None
    return token, device_id.strip() if device_id is not None else None


async def _lookup(digest: str, claimed_id: str | None) -> _Entry | None:
    entry = _entries.get(digest)
    if entry is not None:
        device_id = entry.device.id
    elif claimed_id is not None and looks_like_device_id(claimed_id):
        device_id = claimed_id  # trusted below only if the row agrees
    else:
        # A token not seen before names no device until its row is read. The epoch
        # is read first all the same: the request must see routes and keys as of
        # now, not as of this process's last request (store.last_read_epoch).
        await read_versions("-")
        return await _load(digest, None, None)
    versions = await read_versions(device_id)
    if entry is not None and entry.versions == versions and _is_fresh(entry):
        return entry
    return await _load(digest, device_id, versions)


def _answers(entry: _Entry, claimed_id: str | None) -> bool:
    """Whether ``entry`` may stand for these credentials: the device id they
    claim, if any, is its own, and it is not revoked (a 401, like no device)."""
    return (claimed_id is None or claimed_id == entry.device.id) and (
        entry.device.status != Status.REVOKED
    )


def _is_fresh(entry: _Entry) -> bool:
    return time.monotonic() - entry.loaded_at < CACHE_MAX_AGE_SECONDS


async def _load(
    digest: str, device_id: str | None, versions: tuple[int, int] | None
) -> _Entry | None:
    """One query. ``versions`` of ``device_id`` were read before it, or are None."""
    device = await run_sync(device_for_token_hash, digest)
    if device is None:
        _entries.pop(digest, None)
        return None
    if device.pk != device_id:
        versions = None  # read for another device, or not at all: not trusted
    entry = _Entry(
        device=AuthenticatedDevice(
            id=device.pk,
            name=device.name,
            status=device.status,
            tier=as_tier(device.tier),
            owner_id=str(device.owner.pk) if device.owner is not None else None,
            owner_name=device.owner.name if device.owner is not None else None,
        ),
        suspended_until=device.suspended_until,
        suspension_reason=device.suspension_reason,
        versions=versions,
        loaded_at=time.monotonic(),
    )
    if len(_entries) >= MAX_CACHED_DEVICES and digest not in _entries:
        _entries.clear()  # crude but bounded; refilled at one query per device
    _entries[digest] = entry
    return entry


def _admit(entry: _Entry) -> AuthenticatedDevice:
    device = entry.device
    status = device.status
    if status == Status.SUSPENDED:
        until = entry.suspended_until
        if until is None or until > clock.utcnow():
            raise DeviceSuspended(
                f"This device is suspended until {iso_z(until)}" if until else None,
                suspendedUntil=iso_z(until) if until else None,
                reason=entry.suspension_reason,
            )
        return _with_status(device, Status.APPROVED)  # the suspension has ended
    if status == Status.PENDING_APPROVAL:
        raise DevicePendingApproval()
    if status == Status.REJECTED:
        raise DeviceRejected()
    return device


def _with_status(device: AuthenticatedDevice, status: str) -> AuthenticatedDevice:
    return AuthenticatedDevice(
        id=device.id,
        name=device.name,
        status=status,
        tier=device.tier,
        owner_id=device.owner_id,
        owner_name=device.owner_name,
    )


async def _refuse(ip: str) -> NoReturn:
    await guard.record_auth_failure(ip)
    raise AuthenticationFailed()


# --- Django views ------------------------------------------------------------


def request_headers(request: HttpRequest) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


async def authenticate_request(request: HttpRequest) -> AuthenticatedDevice:
    """The IP guard, then authentication (SPEC's order), for Django views."""
    from gateway.core.client_ip import client_ip_from_request

    ip = client_ip_from_request(request)
    await guard.check_ip(ip)
    return await authenticate(request_headers(request), ip=ip)


AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


class DeviceRequest(HttpRequest):
    """A request that ``device_required`` authenticated: ``device`` is its caller."""

    device: AuthenticatedDevice


def device_required(view: AsyncView) -> AsyncView:
    """For async Django views: authenticates and sets ``request.device``.

    CSRF-exempt: the credentials are headers a browser never adds by itself,
    so a forged cross-site request carries none. Without the exemption
    Django's CSRF check would answer an unsafe method with 403 before the
    view's own method check could answer 405.
    """

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        device_request = cast(DeviceRequest, request)
        device_request.device = await authenticate_request(request)
        return await view(device_request, *args, **kwargs)

    return csrf_exempt(wrapper)
