"""``enroll_totp``: provisioning URI and terminal QR code for a staff user."""

from __future__ import annotations

import io
from base64 import b32decode
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from tests.support.staff import STAFF_PASSWORD, admin_login, make_staff

pytestmark = pytest.mark.django_db


def enroll(*args: str) -> str:
    out = io.StringIO()
    call_command("enroll_totp", *args, stdout=out)
    return out.getvalue()


def code_from_uri(uri: str) -> str:
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    generator = TOTP(b32decode(secret + "=" * (-len(secret) % 8)))
    return str(generator.token()).zfill(6)


def uri_in(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("otpauth://"))


def test_it_prints_a_uri_and_qr_code_whose_codes_open_the_admin(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    make_staff("ops", enrol=False)
    output = enroll("ops")
    uri = uri_in(output)
    assert uri.startswith("otpauth://totp/Hanzo%20AI%20Gateway%3Aops?")
    assert "issuer=Hanzo%20AI%20Gateway" in uri
    assert "█" in output or "▀" in output  # the terminal QR code
    device = TOTPDevice.objects.get(user__username="ops")
    assert device.confirmed
    assert device.key not in output  # only the URI carries the secret
    client = Client()
    assert admin_login(client, "ops", STAFF_PASSWORD, code_from_uri(uri)).status_code == 302


def test_a_second_enrolment_needs_reset_which_replaces_the_secret() -> None:
    make_staff("ops", enrol=False)
    first = uri_in(enroll("ops"))
    with pytest.raises(CommandError, match="already has an authenticator; use --reset"):
        enroll("ops")
    second = uri_in(enroll("ops", "--reset"))
    assert second != first
    assert TOTPDevice.objects.filter(user__username="ops").count() == 1


def test_an_unknown_user_is_a_one_line_error() -> None:
    with pytest.raises(CommandError, match=r"^no user named 'ghost'$"):
        enroll("ghost")


def test_a_user_who_is_not_staff_is_a_one_line_error() -> None:
    make_staff("visitor", is_staff=False, enrol=False)
    with pytest.raises(CommandError, match=r"^user 'visitor' is not staff$"):
        enroll("visitor")
    assert not TOTPDevice.objects.exists()
