"""Every write to a device. Nothing else changes a device's status, tier or owner.

Each state change locks the device row, checks the transition against the
device's effective status, writes the change and one audit event in the
same transaction, and on commit bumps the device's version in the shared
store so every gateway process drops its cached copy before its next
request. The workflow:

    pending_approval -> approved | rejected | revoked
    approved         -> suspended | revoked
    suspended        -> approved (lifts it) | suspended (replaces it) | revoked
    rejected, revoked: final

A suspension whose time has passed has ended by itself (the device's
effective status is ``approved``); ``device_end_expired_suspensions`` only
records that end, so the stored status and the audit trail catch up.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import islice
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from redis.exceptions import RedisError

from devices.errors import DeviceNotFound, InvalidTransition, iso_z
from devices.models import AuditEvent, Device, OwnerAccount
from devices.signals import device_registered
from devices.tokens import new_token, token_hash, token_prefix
from gateway.core import clock
from gateway.core.errors import InvalidRequest
from gateway.core.store import bump_device_version

logger = logging.getLogger(__name__)

# A staff user, or a name for who acted: "command:approve_device", "system".
Actor = AbstractBaseUser | str

Status = Device.Status
# Long enough for "until further notice", short enough to stay a valid date.
MAX_SUSPENSION_HOURS = Decimal(24 * 365 * 100)
MAX_REASON_LENGTH = 500
MAX_OWNER_NAME_LENGTH = 150
# What a caching process may serve at most after a lost version bump.
CACHE_MAX_AGE_SECONDS = 60


# --- Registration ------------------------------------------------------------


@transaction.atomic
def device_register(*, name: str, platform: str, version: str, ip: str) -> tuple[Device, str]:
    """A new pending device and its clear token, which is never stored nor shown again."""
    token = new_token()
    now = clock.utcnow()
    device = Device.objects.create(
        name=name,
        platform=platform,
        version=version,
        registration_ip=ip,
        token_hash=token_hash(token),
        token_prefix=token_prefix(token),
        created_at=now,
    )
    _audit(
        device=device,
        actor="client",
        ip=ip,
        action=AuditEvent.Action.REGISTER,
        changes={"status": {"before": None, "after": device.status}},
        now=now,
    )
    transaction.on_commit(
        partial(device_registered.send_robust, sender=Device, device=device), robust=True
    )
    return device, token


# --- The approval workflow ---------------------------------------------------


def device_approve(
    *,
    device: Device,
    actor: Actor,
    ip: str | None,
    tier: str | None = None,
    owner_name: str | None = None,
) -> Device:
    """Approve a pending device, or lift a suspension; optionally set tier and owner."""
    tier = _valid_tier(tier) if tier is not None else None
    owner_name = _valid_owner_name(owner_name) if owner_name is not None else None

    def apply(locked: Device, now: datetime) -> None:
        locked.status = Status.APPROVED
        locked.approved_at = now
        locked.approved_by_id = actor.pk if isinstance(actor, AbstractBaseUser) else None
        _clear_suspension(locked)
        if tier is not None:
            locked.tier = tier
        if owner_name is not None:
            locked.owner = _owner(owner_name, now)

    return _staff_change(AuditEvent.Action.APPROVE, device=device, actor=actor, ip=ip, apply=apply)


def device_reject(*, device: Device, actor: Actor, ip: str | None) -> Device:
    def apply(locked: Device, now: datetime) -> None:
        locked.status = Status.REJECTED

    return _staff_change(AuditEvent.Action.REJECT, device=device, actor=actor, ip=ip, apply=apply)


def device_suspend(
    *, device: Device, actor: Actor, ip: str | None, hours: Decimal | float, reason: str
) -> Device:
    """Refuse the device for ``hours`` (fractions allowed); a new suspension replaces one."""
    duration = _valid_hours(hours)
    reason = _valid_text(reason, "reason", MAX_REASON_LENGTH)

    def apply(locked: Device, now: datetime) -> None:
        until = now + duration
        if until.microsecond:  # whole seconds, so the suspendedUntil clients see is exact
            until = until.replace(microsecond=0) + timedelta(seconds=1)
        locked.status = Status.SUSPENDED
        locked.suspended_until = until
        locked.suspension_reason = reason

    return _staff_change(AuditEvent.Action.SUSPEND, device=device, actor=actor, ip=ip, apply=apply)


def device_revoke(*, device: Device, actor: Actor, ip: str | None) -> Device:
    def apply(locked: Device, now: datetime) -> None:
        locked.status = Status.REVOKED
        _clear_suspension(locked)

    return _staff_change(AuditEvent.Action.REVOKE, device=device, actor=actor, ip=ip, apply=apply)


def device_set_tier(*, device: Device, tier: str, actor: Actor, ip: str | None) -> Device:
    tier = _valid_tier(tier)

    def apply(locked: Device, now: datetime) -> None:
        locked.tier = tier

    return _staff_change(AuditEvent.Action.SET_TIER, device=device, actor=actor, ip=ip, apply=apply)


def device_assign_owner(
    *, device: Device, owner_name: str | None, actor: Actor, ip: str | None
) -> Device:
    """Give the device to the named owner account (created if missing); None removes it."""
    owner_name = _valid_owner_name(owner_name) if owner_name is not None else None

    def apply(locked: Device, now: datetime) -> None:
        locked.owner = _owner(owner_name, now) if owner_name is not None else None

    return _staff_change(
        AuditEvent.Action.ASSIGN_OWNER, device=device, actor=actor, ip=ip, apply=apply
    )


def device_end_expired_suspensions(*, limit: int = 500) -> int:
    """Record the end of suspensions whose time has passed; returns how many ended.

    Safe to run from every process at once: each device is re-checked under
    its row lock, so each end is recorded once.
    """

    def apply(locked: Device, now: datetime) -> None:
        if locked.status == Status.SUSPENDED:
            locked.status = Status.APPROVED
            _clear_suspension(locked)

    now = clock.utcnow()
    expired = Device.objects.filter(status=Status.SUSPENDED, suspended_until__lte=now)
    ended = 0
    for device in expired.only("pk")[:limit]:
        _, changed = _change(
            device=device,
            actor="system",
            ip=None,
            action=AuditEvent.Action.SUSPENSION_ENDED,
            allowed={Status.APPROVED},
            apply=apply,
        )
        ended += changed
    return ended


# --- Activity (not a state change: no audit, no version bump) ----------------


def device_record_activity(*, seen: Mapping[str, tuple[datetime, str]], batch: int = 100) -> None:
    """Write when and from where devices were last seen; never moves a time backwards."""
    items = iter(seen.items())
    while chunk := list(islice(items, batch)):
        with transaction.atomic():
            for device_id, (when, ip) in chunk:
                Device.objects.filter(
                    Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=when), pk=device_id
                ).update(last_seen_at=when, last_ip=ip)


# --- Helpers -----------------------------------------------------------------

_ANY_LIVE = frozenset({Status.PENDING_APPROVAL, Status.APPROVED, Status.SUSPENDED})
# The workflow above: the effective statuses each staff action may start from.
_ALLOWED_FROM: dict[str, frozenset[str]] = {
    AuditEvent.Action.APPROVE: frozenset({Status.PENDING_APPROVAL, Status.SUSPENDED}),
    AuditEvent.Action.REJECT: frozenset({Status.PENDING_APPROVAL}),
    AuditEvent.Action.SUSPEND: frozenset({Status.APPROVED, Status.SUSPENDED}),
    AuditEvent.Action.REVOKE: _ANY_LIVE,
    AuditEvent.Action.SET_TIER: _ANY_LIVE,
    AuditEvent.Action.ASSIGN_OWNER: _ANY_LIVE,
}


def _staff_change(
    action: str,
    *,
    device: Device,
    actor: Actor,
    ip: str | None,
    apply: Callable[[Device, datetime], None],
) -> Device:
    """An action of the workflow, from the statuses ``_ALLOWED_FROM`` gives it."""
    device, _ = _change(
        device=device,
        actor=actor,
        ip=ip,
        action=action,
        allowed=_ALLOWED_FROM[action],
        apply=apply,
    )
    return device


@transaction.atomic
def _change(
    *,
    device: Device,
    actor: Actor,
    ip: str | None,
    action: str,
    allowed: Collection[str],
    apply: Callable[[Device, datetime], None],
) -> tuple[Device, bool]:
    """Apply one audited change under the row lock; (device, whether anything changed)."""
    now = clock.utcnow()
    # of=("self",): PostgreSQL cannot lock the nullable side of the owner join.
    locked = (
        Device.objects.select_for_update(of=("self",))
        .select_related("owner")
        .filter(pk=device.pk)
        .first()
    )
    if locked is None:
        raise DeviceNotFound()
    status = locked.effective_status(now)
    if status not in allowed:
        raise InvalidTransition(
            f"Cannot {action.replace('_', ' ')} device {locked.pk}: it is "
            f"{status.replace('_', ' ')}"
        )
    before = _snapshot(locked)
    apply(locked, now)
    changes = {
        field: {"before": value, "after": after}
        for (field, value), after in zip(before.items(), _snapshot(locked).values(), strict=True)
        if value != after
    }
    if not changes:
        return locked, False
    locked.save()
    _audit(device=locked, actor=actor, ip=ip, action=action, changes=changes, now=now)
    transaction.on_commit(partial(_notify_caches, locked.pk))
    return locked, True


def _snapshot(device: Device) -> dict[str, Any]:
    return {
        "status": device.status,
        "tier": device.tier,
        "owner": device.owner.name if device.owner is not None else None,
        "suspended_until": iso_z(device.suspended_until) if device.suspended_until else None,
        "suspension_reason": device.suspension_reason or None,
    }


def _audit(
    *,
    device: Device,
    actor: Actor,
    ip: str | None,
    action: str,
    changes: dict[str, Any],
    now: datetime,
) -> None:
    AuditEvent.objects.create(
        actor=actor.get_username() if isinstance(actor, AbstractBaseUser) else actor,
        actor_user_id=actor.pk if isinstance(actor, AbstractBaseUser) else None,
        action=action,
        device=device,
        changes=changes,
        created_at=now,
        ip=ip,
    )


def _notify_caches(device_id: str) -> None:
    try:
        bump_device_version(device_id)
    except (RedisError, OSError):
        # The change is committed; processes that cached the device catch up
        # when their entry reaches its maximum age.
        logger.error(
            "could not bump the version of device %s; gateway caches follow within %ss",
            device_id,
            CACHE_MAX_AGE_SECONDS,
        )


def _clear_suspension(device: Device) -> None:
    device.suspended_until = None
    device.suspension_reason = ""


def _owner(name: str, now: datetime) -> OwnerAccount:
    owner, _ = OwnerAccount.objects.get_or_create(name=name, defaults={"created_at": now})
    return owner


def _valid_tier(tier: str) -> str:
    if tier not in Device.Tier.values:
        raise InvalidRequest(f"tier must be one of: {', '.join(Device.Tier.values)}")
    return tier


def _valid_owner_name(name: str) -> str:
    return _valid_text(name, "user", MAX_OWNER_NAME_LENGTH)


def _valid_text(value: object, field: str, max_length: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not 1 <= len(text) <= max_length or has_control_characters(text):
        raise InvalidRequest(f"{field} must be 1 to {max_length} printable characters")
    return text


def _valid_hours(hours: Decimal | float) -> timedelta:
    try:
        value = Decimal(str(hours)) if not isinstance(hours, bool) else Decimal("NaN")
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or not 0 < value <= MAX_SUSPENSION_HOURS:
        raise InvalidRequest(f"hours must be a positive number up to {MAX_SUSPENSION_HOURS}")
    return timedelta(seconds=float(value * 3600))


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)
