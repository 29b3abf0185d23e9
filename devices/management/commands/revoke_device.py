from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devices.management.base import describe, find_device, service_errors
from devices.services import device_revoke


class Command(BaseCommand):
    help = "Revoke a device's credentials (final); refused on its next request everywhere."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", metavar="ID")

    def handle(self, *args: Any, device_id: str, **_: Any) -> None:
        device = find_device(device_id)
        with service_errors():
            device = device_revoke(device=device, actor="command:revoke_device", ip=None)
        self.stdout.write(f"Revoked {describe(device)}")
