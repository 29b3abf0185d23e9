from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import LedgerMismatch, usage_prune
from gateway.core import clock
from usage.days import budget_day
from usage.models import UsageRecord

DEFAULT_DAYS = 400
DEFAULT_BATCH_SIZE = 5000


class Command(BaseCommand):
    help = (
        "Delete usage records of budget days older than --days, in batches, after folding "
        "each day into its daily rollups (reports keep adding up). Safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="keep this many days")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days, batch_size = options["days"], options["batch_size"]
        if days < 1:
            raise CommandError(f"--days must be at least 1, got {days}")
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}")
        before = budget_day(clock.now()) - timedelta(days=days)
        if options["dry_run"]:
            count = UsageRecord.objects.filter(budget_day__lt=before).count()
            self.stdout.write(f"would prune {count} usage records before {before.isoformat()}")
            return
        try:
            result = usage_prune(before=before, batch_size=batch_size)
        except LedgerMismatch as error:
            raise CommandError(f"{error}; run retention again") from None
        self.stdout.write(
            f"pruned {result.records} usage records of {len(result.days)} budget days "
            f"before {before.isoformat()} (their daily rollups are kept)"
        )
