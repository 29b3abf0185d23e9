"""Billing's reactions to other apps' events."""

from __future__ import annotations

from typing import Any

from billing import alerts


def on_device_registered(sender: Any, device: Any, **kwargs: Any) -> None:
    # enqueue only: the Slack call happens on the alerts thread, never here.
    alerts.alert_new_device(
        device_id=device.id, name=device.name, platform=device.platform, ip=device.registration_ip
    )


def on_device_auto_suspended(sender: Any, device: Any, reason: str, **kwargs: Any) -> None:
    alerts.alert_suspicious_device(device_id=device.pk, name=device.name, reason=reason)
