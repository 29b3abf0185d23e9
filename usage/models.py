from __future__ import annotations

import ipaddress
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from gateway.core import clock


class UsageRecord(models.Model):
    """One admitted request, whatever became of it: the ledger of record.

    Denormalised on purpose (device and owner as ids, not foreign keys): the
    ledger must outlive the devices it bills and be written without joins.
    Prompts and completions are never stored.
    """

    class Status(models.TextChoices):
        OK = "ok"
        UPSTREAM_ERROR = "upstream_error"
        UPSTREAM_TIMEOUT = "upstream_timeout"
        UPSTREAM_REJECTED = "upstream_rejected"
        UPSTREAM_OVERLOADED = "upstream_overloaded"
        CLIENT_DISCONNECTED = "client_disconnected"
        # The gateway stopped it: a worker shutting down mid-request, or a bug.
        INTERRUPTED = "interrupted"

    request_id = models.CharField(max_length=64, unique=True)
    device_id = models.CharField(max_length=64)
    owner = models.CharField(max_length=150, blank=True, default="")
    ip = models.CharField(max_length=64)
    model = models.CharField(max_length=100)
    provider = models.CharField(max_length=32)
    tier = models.CharField(max_length=16)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6)
    is_estimated = models.BooleanField(
        default=False, help_text="Tokens estimated by the gateway, not reported by the provider."
    )
    status = models.CharField(max_length=32, choices=Status.choices)
    is_streamed = models.BooleanField(default=False)
    duration_ms = models.PositiveIntegerField(default=0)
    budget_day = models.DateField(
        help_text="Budget day (BUDGET_TIMEZONE) the request was admitted in."
    )
    created_at = models.DateTimeField(help_text="When the request was admitted (gateway clock).")
    requested_model = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="The model the client asked for; ``model`` is the route that answered "
        "(a fallback, when they differ).",
    )
    attempts = models.PositiveSmallIntegerField(
        default=1,
        help_text="Upstream attempts it took (other keys, fallback routes); 0: none was "
        "made (every route's breaker open, or the client left first).",
    )

    class Meta:
        indexes = [
            models.Index(fields=["budget_day", "model"], name="usage_day_model"),
            models.Index(fields=["device_id", "budget_day"], name="usage_device_day"),
            models.Index(fields=["created_at"], name="usage_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status} ${self.cost_usd}"

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def validate_network(value: str) -> None:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValidationError(
            "Enter an IP address or a CIDR network, e.g. 203.0.113.0/24 or 2001:db8::/48."
        ) from None


def normalize_network(value: str) -> str:
    """``203.0.113.7/24`` -> ``203.0.113.0/24``; a bare address becomes a /32 or /128."""
    return str(ipaddress.ip_network(value.strip(), strict=False))


class BlockedNetwork(models.Model):
    """Addresses refused with 403 ``ip_blocked`` before anything else is checked.

    Every process keeps the list in memory and reloads it when the store's
    epoch moves (bumped after each save and delete, see ``usage.apps``).
    """

    cidr = models.CharField(
        "network",
        max_length=64,
        unique=True,
        validators=[validate_network],
        help_text="An IP address or CIDR network, e.g. 203.0.113.0/24 or 2001:db8::/48.",
    )
    reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=clock.utcnow, editable=False)

    class Meta:
        ordering = ["cidr"]
        verbose_name = "blocked network"

    def __str__(self) -> str:
        return self.cidr

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.cidr = normalize_network(self.cidr)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        # Normalised before the uniqueness check, so 203.0.113.7/24 and
        # 203.0.113.0/24 are seen as the same network.
        try:
            self.cidr = normalize_network(self.cidr)
        except ValueError:
            pass  # clean_fields reported it
