from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devices.errors import iso_z
from devices.management.base import decimal_hours, describe, find_device, service_errors
from devices.services import device_suspend


class Command(BaseCommand):
    help = "Suspend an approved device for H hours (fractions allowed), giving a reason."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", metavar="ID")
        parser.add_argument("--hours", type=decimal_hours, required=True, metavar="H")
        parser.add_argument("--reason", required=True, metavar="R")

    def handle(self, *args: Any, device_id: str, hours: Decimal, reason: str, **_: Any) -> None:
        device = find_device(device_id)
        with service_errors():
            device = device_suspend(
                device=device, actor="command:suspend_device", ip=None, hours=hours, reason=reason
            )
        assert device.suspended_until is not None
        until = iso_z(device.suspended_until)
        self.stdout.write(f"Suspended until {until}: {describe(device)}")
