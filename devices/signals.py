"""Hooks other apps connect to (billing's alerts send them to Slack): devices never
import billing, billing hears devices through these."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once the registration has committed, with ``device=<Device>``, by
# ``send_robust``: a failing receiver is logged and never fails the
# registration. Receivers run in the request's thread, so anything slow (a
# Slack call) must be handed off, not done inline.
device_registered = Signal()

# Sent when a device was suspended automatically, with ``device=<Device>``
# and ``reason=<str>``, by ``send_robust``, after the suspension committed.
device_auto_suspended = Signal()
