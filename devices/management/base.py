"""What the device commands share: finding the device and one-line errors."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation

from django.core.management.base import CommandError

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
