from __future__ import annotations

from datetime import datetime

from django.db import models


class PauseState(models.Model):
    """The service-wide pause, kept in the database (one row, pk=1).

    The shared store mirrors it for the hot path (billing.budget.mirror_pause_state);
    this row is what survives a Redis restart. ``until`` null means until resumed.
    """

    SINGLETON_ID = 1

    is_paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=500, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="pause_state_single_row"),
        ]
        # Staff pause and resume the service from the dashboard with this
        # (gateway.core.permissions.PAUSE_SERVICE); the row itself is never edited by hand.
        permissions = [("pause_service", "Can pause and resume the service")]

    def __str__(self) -> str:
        return f"paused: {self.reason}" if self.is_paused else "running"

    def is_active(self, at: datetime) -> bool:
        """Paused at ``at``: an automatic pause lapses when its budget day ends."""
        return self.is_paused and (self.until is None or at < self.until)


class BudgetAuditEvent(models.Model):
    """Who paused or resumed the service, when, why and from where."""

    class Action(models.TextChoices):
        PAUSE = "pause"
        RESUME = "resume"
        AUTO_PAUSE = "auto_pause"

    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=150)
    reason = models.CharField(max_length=500, blank=True, default="")
    until = models.DateTimeField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="budget_audit_created")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} by {self.actor}"


class AlertLog(models.Model):
    """Alerts sent once per budget day; the unique constraint decides who sends."""

    class Kind(models.TextChoices):
        BUDGET_WARNING = "budget_warning"
        BUDGET_EXHAUSTED = "budget_exhausted"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    budget_day = models.DateField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "budget_day"], name="alert_once_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.budget_day}"


class DailyRollup(models.Model):
    """Usage records of one budget day folded per (model, provider, tier, device).

    Built by billing.services.rollup_day; reports read it only for days
    whose records retention has pruned (see billing.reports).
    """

    budget_day = models.DateField()
    model = models.CharField(max_length=100)
    provider = models.CharField(max_length=32)
    tier = models.CharField(max_length=16)
    device_id = models.CharField(max_length=64)
    requests = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget_day", "model", "provider", "tier", "device_id"],
                name="rollup_one_row_per_group",
            ),
        ]
        indexes = [
            models.Index(fields=["device_id", "budget_day"], name="rollup_device_day"),
        ]

    def __str__(self) -> str:
        return f"{self.budget_day} {self.model} {self.device_id} ${self.cost_usd}"


class PrunedDay(models.Model):
    """A budget day handed to retention: its DailyRollup rows are its ledger from now on.

    Written once the day's rollups are checked against its records, before
    any record is deleted. Reports read a day that has this row from its
    rollups only, so they add up while retention deletes the records in
    batches, and after it stopped half-way (see billing.services.usage_prune).
    """

    budget_day = models.DateField(unique=True)
    requests = models.PositiveBigIntegerField()
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6)
    sealed_at = models.DateTimeField()

    class Meta:
        ordering = ["budget_day"]

    def __str__(self) -> str:
        return f"{self.budget_day} ({self.requests} requests, ${self.cost_usd})"
