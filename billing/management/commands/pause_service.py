from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.commands import operator_actor
from billing.services import budget_pause


class Command(BaseCommand):
    help = "Pause the service for every device until resume_service."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must not be empty")
        if len(reason) > 500:
            raise CommandError("--reason is longer than 500 characters")
        budget_pause(reason=reason, actor=operator_actor())
        self.stdout.write(f"Service paused: {reason}")
