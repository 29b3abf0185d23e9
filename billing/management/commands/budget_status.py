from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.budget import current_spend, daily_budget_micro
from billing.pricing import micro_to_usd, usd_number
from billing.selectors import pause_state_get
from gateway.core import clock
from usage.days import budget_day


class Command(BaseCommand):
    help = "Today's spend, reservations and budget, and whether the service is paused."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        spent, reserved, paused = current_spend()
        budget = daily_budget_micro()
        state = pause_state_get()
        status = {
            "day": budget_day(clock.now()).isoformat(),
            "budgetUsd": usd_number(micro_to_usd(budget)),
            "spentUsd": usd_number(micro_to_usd(spent)),
            "reservedUsd": usd_number(micro_to_usd(reserved)),
            "remainingUsd": usd_number(micro_to_usd(budget - spent - reserved)),
            "paused": paused,
            "pauseReason": (state.reason or None) if paused else None,
        }
        if options["format"] == "json":
            self.stdout.write(json.dumps(status))
            return
        lines = [
            f"Budget day  {status['day']}",
            f"Budget      ${micro_to_usd(budget)}",
            f"Spent       ${micro_to_usd(spent)}",
            f"Reserved    ${micro_to_usd(reserved)}",
            f"Remaining   ${micro_to_usd(budget - spent - reserved)}",
            f"Paused      {'yes: ' + (state.reason or '-') if paused else 'no'}",
        ]
        if paused and state.until is not None:
            lines.append(f"Until       {state.until.isoformat()}")
        self.stdout.write("\n".join(lines))
