from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devices.models import Device
from devices.selectors import device_list, device_summary
from gateway.core import clock

COLUMNS = ("id", "name", "platform", "status", "tier", "user", "ip", "lastSeenAt")
MAX_CELL = 32


class Command(BaseCommand):
    help = "List devices with status, tier, owner and last seen."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", choices=Device.Status.values)
        parser.add_argument("--format", choices=("table", "json"), default="table")

    def handle(self, *args: Any, status: str | None, format: str, **_: Any) -> None:
        now = clock.utcnow()
        rows = [device_summary(device, at=now) for device in device_list(status=status)]
        if format == "json":
            self.stdout.write(json.dumps(rows, ensure_ascii=False))
            return
        cells = [[_cell(row[column]) for column in COLUMNS] for row in rows]
        widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(COLUMNS)]
        for line in [list(COLUMNS), *cells]:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(line, widths, strict=True)
                ).rstrip()
            )


def _cell(value: object) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
