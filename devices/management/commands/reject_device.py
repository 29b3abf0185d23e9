from __future__ import annotations

from devices.management.base import PlainDeviceCommand
from devices.services import device_reject


class Command(PlainDeviceCommand):
    help = "Reject a pending device (final)."
    service = staticmethod(device_reject)
    actor = "command:reject_device"
    done = "Rejected"
