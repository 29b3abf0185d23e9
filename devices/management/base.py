"""What the device commands share: finding the device, one-line errors, the plain actions."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices.models import Device
from devices.selectors import device_get
from devices.tokens import looks_like_device_id
from gateway.core.errors import GatewayError


def find_device(device_id: str) -> Device:
    # Echo the argument only when it has a device id's shape: an operator who
    # pasted a session token by mistake must not see it printed back.
    if not looks_like_device_id(device_id):
        raise CommandError("Malformed device id (expected 'dev_' followed by 22 characters)")
    with service_errors():
        return device_get(device_id)


@contextmanager
def service_errors() -> Iterator[None]:
    """A refusal from a service (unknown device, illegal transition, bad value) as one line."""
    try:
        yield
    except GatewayError as error:
        raise CommandError(error.detail) from None


def decimal_hours(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def describe(device: Device) -> str:
    owner = device.owner.name if device.owner is not None else "-"
    return f"{device.pk} ({device.name}): status {device.status}, tier {device.tier}, user {owner}"


class PlainDeviceCommand(BaseCommand):
    """A command that applies one service to the device given by id, with nothing to ask."""

    service: ClassVar[Callable[..., Device]]
    actor: ClassVar[str]  # "command:<its name>"
    done: ClassVar[str]  # what it says before the device: "Rejected"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", metavar="ID")

    def handle(self, *args: Any, device_id: str, **_: Any) -> None:
        device = find_device(device_id)
        with service_errors():
            device = type(self).service(device=device, actor=self.actor, ip=None)
        self.stdout.write(f"{self.done} {describe(device)}")
