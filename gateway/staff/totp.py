"""TOTP second factor for staff: enrolment (the device the admin login checks)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice


class AlreadyEnrolled(Exception):
    """The user already has an authenticator; replacing it must be explicit."""


@transaction.atomic
def totp_device_enroll(*, user: AbstractBaseUser, reset: bool = False) -> TOTPDevice:
    """Create a confirmed TOTP device for ``user`` (replacing theirs when ``reset``)."""
    existing = TOTPDevice.objects.devices_for_user(user, confirmed=None)
    if existing.exists():
        if not reset:
            raise AlreadyEnrolled
        existing.delete()
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
