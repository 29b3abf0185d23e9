from __future__ import annotations

import re
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.reports import RENDERERS, cost_report, month_bounds
from gateway.core import clock
from usage.days import budget_day

MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _period(month: str | None, day: str | None) -> tuple[date, date]:
    if month and day:
        raise CommandError("give --month or --day, not both")
    if day:
        try:
            single = date.fromisoformat(day) if len(day) == 10 else None
        except ValueError:
            single = None
        if single is None:
            raise CommandError(f"--day must be a date YYYY-MM-DD, got {day!r}")
        return single, single
    if month:
        match = MONTH.match(month)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
            raise CommandError(f"--month must be YYYY-MM, got {month!r}")
        return month_bounds(int(match.group(1)), int(match.group(2)))
    today = budget_day(clock.now())
    return month_bounds(today.year, today.month)


class Command(BaseCommand):
    help = "Spend by day, model, provider, tier and the top 10 devices (current month by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", help="YYYY-MM (budget days of that month)")
        parser.add_argument("--day", help="YYYY-MM-DD (one budget day)")
        parser.add_argument("--format", choices=sorted(RENDERERS), default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = _period(options["month"], options["day"])
        report = cost_report(start=start, end=end)
        self.stdout.write(RENDERERS[options["format"]](report), ending="")
