from __future__ import annotations

from devices.management.base import PlainDeviceCommand
from devices.services import device_revoke


class Command(PlainDeviceCommand):
    help = "Revoke a device's credentials (final); refused on its next request everywhere."
    service = staticmethod(device_revoke)
    actor = "command:revoke_device"
    done = "Revoked"
