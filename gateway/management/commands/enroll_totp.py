"""``enroll_totp USERNAME [--reset]``: give a staff user a TOTP authenticator.

Prints the provisioning URI and the same as a QR code for the terminal; the
URI carries the shared secret, so it is shown once and never logged.
"""

from __future__ import annotations

import io
from typing import Any

import segno
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.staff.totp import AlreadyEnrolled, totp_device_enroll


class Command(BaseCommand):
    help = "Create (or with --reset replace) a staff user's TOTP authenticator."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--reset", action="store_true", help="replace the user's existing authenticator"
        )

    def handle(self, *args: Any, username: str, reset: bool, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        if not user.is_staff:
            raise CommandError(f"user {username!r} is not staff")
        try:
            device = totp_device_enroll(user=user, reset=reset)
        except AlreadyEnrolled:
            raise CommandError(
                f"user {username!r} already has an authenticator; use --reset to replace it"
            ) from None
        uri = device.config_url
        self.stdout.write("Scan this code with an authenticator app, or enter the URI:\n")
        picture = io.StringIO()
        segno.make(uri, error="m").terminal(out=picture, compact=True)
        self.stdout.write(picture.getvalue())
        self.stdout.write(uri)
