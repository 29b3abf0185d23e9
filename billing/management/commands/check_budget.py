from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing import alerts
from billing.budget import current_spend, daily_budget_micro
from billing.models import AlertLog
from billing.pricing import micro_to_usd
from billing.selectors import auto_paused_on
from gateway.core import clock
from usage.days import budget_day

SENDERS = {
    AlertLog.Kind.BUDGET_WARNING.value: alerts.alert_budget_warning,
    AlertLog.Kind.BUDGET_EXHAUSTED.value: alerts.alert_budget_exhausted,
}


class Command(BaseCommand):
    help = "Send the budget warning / exhausted alerts that are due (each once per budget day)."

    def handle(self, *args: Any, **options: Any) -> None:
        day = budget_day(clock.now())
        spent, _reserved, _paused = current_spend()
        budget = daily_budget_micro()
        self.stdout.write(
            f"{day.isoformat()}: spent ${micro_to_usd(spent)} of ${micro_to_usd(budget)}"
        )
        due = alerts.budget_alerts_due(
            spent_micro=spent, budget_micro=budget, is_auto_paused=auto_paused_on(day)
        )
        if not due:
            self.stdout.write("no alert due")
            return
        queued = []
        for kind in due:
            if alerts.alert_sent_today(kind, day):
                self.stdout.write(f"{kind}: already sent today")
            elif SENDERS[kind](day=day, spent_micro=spent, budget_micro=budget):
                queued.append(kind)
        alerts.drain()
        for kind in queued:
            outcome = "sent" if alerts.alert_sent_today(kind, day) else "not sent (will retry)"
            self.stdout.write(f"{kind}: {outcome}")
