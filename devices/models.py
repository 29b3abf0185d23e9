from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models

from devices.tokens import new_device_id
from gateway.core import clock


def _staff_user_link() -> models.ForeignKey[AbstractBaseUser | None, AbstractBaseUser | None]:
    """The staff user who acted, if any; kept as NULL when that user is deleted."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )


class OwnerAccount(models.Model):
    """The "user" of SPEC: one per-user limit spans all the devices it owns."""

    name = models.CharField(max_length=150, unique=True)
    created_at = models.DateTimeField(default=clock.utcnow)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Device(models.Model):
    """A registered client. Its session token is stored only as a keyed hash.

    ``status`` is what the last service call wrote; a suspension whose time
    has passed has ended even while ``status`` still says ``suspended`` (see
    ``effective_status``), until housekeeping records the end.
    """

    class Status(models.TextChoices):
        PENDING_APPROVAL = "pending_approval"
        APPROVED = "approved"
        REJECTED = "rejected"
        SUSPENDED = "suspended"
        REVOKED = "revoked"

    class Tier(models.TextChoices):
        FREE = "free"
        PAID = "paid"

    id = models.CharField(primary_key=True, max_length=32, default=new_device_id, editable=False)
    name = models.CharField(max_length=255)
    platform = models.CharField(max_length=255)
    version = models.CharField(max_length=255)
    registration_ip = models.GenericIPAddressField()
    last_ip = models.GenericIPAddressField(null=True, blank=True)
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.PENDING_APPROVAL
    )
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE)
    owner = models.ForeignKey(
        OwnerAccount, null=True, blank=True, on_delete=models.PROTECT, related_name="devices"
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField()
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = _staff_user_link()
    last_seen_at = models.DateTimeField(null=True, blank=True)
    suspended_until = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="device_status_created"),
            models.Index(fields=["tier"], name="device_tier"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def effective_status(self, at: datetime) -> str:
        """The status at ``at``: an expired suspension has ended by itself."""
        if (
            self.status == self.Status.SUSPENDED
            and self.suspended_until is not None
            and self.suspended_until <= at
        ):
            return self.Status.APPROVED
        return self.status

    @property
    def ip(self) -> str:
        """Where it was last seen from, else where it registered from."""
        return self.last_ip or self.registration_ip


class AuditEvent(models.Model):
    """Who changed what about a device, when, and from where. Never edited."""

    class Action(models.TextChoices):
        REGISTER = "register"
        APPROVE = "approve"
        REJECT = "reject"
        SUSPEND = "suspend"
        REVOKE = "revoke"
        SET_TIER = "set_tier"
        ASSIGN_OWNER = "assign_owner"
        SUSPENSION_ENDED = "suspension_ended"

    actor = models.CharField(
        max_length=150, help_text="Staff username, or e.g. 'command:approve_device', 'system'."
    )
    actor_user = _staff_user_link()
    action = models.CharField(max_length=32, choices=Action.choices)
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="audit_events")
    changes = models.JSONField(
        default=dict, help_text='{"field": {"before": ..., "after": ...}} for each changed field.'
    )
    created_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["device", "-created_at"], name="audit_device_created"),
            models.Index(fields=["-created_at"], name="audit_created"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.device_id} by {self.actor}"
