from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing.commands import operator_actor
from billing.services import budget_resume


class Command(BaseCommand):
    help = "Lift the pause (an operator's or the automatic budget pause)."

    def handle(self, *args: Any, **options: Any) -> None:
        budget_resume(actor=operator_actor())
        self.stdout.write("Service resumed.")
