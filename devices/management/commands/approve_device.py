from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devices.management.base import describe, find_device, service_errors
from devices.models import Device
from devices.services import device_approve


class Command(BaseCommand):
    help = "Approve a pending device (or lift a suspension), optionally setting tier and owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", metavar="ID")
        parser.add_argument("--tier", choices=Device.Tier.values)
        parser.add_argument("--user", help="owning account's name, created if missing")

    def handle(
        self, *args: Any, device_id: str, tier: str | None, user: str | None, **_: Any
    ) -> None:
        device = find_device(device_id)
        with service_errors():
            device = device_approve(
                device=device, actor="command:approve_device", ip=None, tier=tier, owner_name=user
            )
        self.stdout.write(f"Approved {describe(device)}")
