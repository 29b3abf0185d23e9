"""Staff personas for admin, dashboard and admin-API tests.

A conftest imports the fixtures it wants by name. ``totp_code(device)`` is
the code an authenticator app would show now.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.contrib.auth.models import Permission, User
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from gateway.staff.totp import totp_device_enroll

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

STAFF_PASSWORD = "correct horse battery staple 42"
# What an operator ("ops") holds: every ability of gateway.core.permissions.
OPERATOR_PERMISSIONS = (
    "devices.change_device",
    "billing.pause_service",
    "usage.change_blockednetwork",
)


def totp_code(device: TOTPDevice, *, steps_from_now: int = 0) -> str:
    """The code an authenticator app shows for ``device`` (``steps_from_now`` away)."""
    generator = TOTP(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    generator.time = time.time() + steps_from_now * device.step
    return str(generator.token()).zfill(device.digits)


def wrong_code(device: TOTPDevice) -> str:
    """A well-formed code that no nearby time step of ``device`` accepts."""
    near = {totp_code(device, steps_from_now=step) for step in range(-3, 4)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in near)


def make_staff(
    username: str = "ops",
    *,
    is_staff: bool = True,
    enrol: bool = True,
    for_servers: bool = False,
    permissions: Iterable[str] = (),
) -> tuple[User, TOTPDevice | None]:
    """A user with STAFF_PASSWORD, ``permissions`` ("app.codename") and (``enrol``) a TOTP device.

    ``for_servers``: hashed with Django's default hasher, which gateway
    server processes check (this process may use a fast test hasher).
    """
    if for_servers:
        password = PBKDF2PasswordHasher().encode(STAFF_PASSWORD, PBKDF2PasswordHasher().salt())
    else:
        password = make_password(STAFF_PASSWORD)
    user = get_user_model().objects.create(username=username, password=password, is_staff=is_staff)
    grant(user, *permissions)
    device = totp_device_enroll(user=user) if enrol else None
    return user, device


def grant(user: User, *permissions: str) -> None:
    """Give ``user`` these Django permissions ("app.codename")."""
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def verified_client(user: User, device: TOTPDevice | None) -> Client:
    """A client logged in as ``user`` and, if a device is given, past the second factor."""
    client = Client()
    client.force_login(user)
    if device is not None:
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Settings) -> None:
    """Hashing costs a third of a second by design; these tests log in a lot."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff_user(db: None) -> tuple[User, TOTPDevice | None]:
    """An operator: staff with a TOTP device and OPERATOR_PERMISSIONS."""
    return make_staff("ops", permissions=OPERATOR_PERMISSIONS)


@pytest.fixture
def plain_user(db: None) -> User:
    """A logged-in account that is not staff."""
    return make_staff("visitor", is_staff=False, enrol=False)[0]


def admin_login(
    client: Client, username: str, password: str, code: str | None = None, **extra: Any
) -> TestResponse:
    """Post the admin login form as a browser would; returns the response."""
    data = {"username": username, "password": password, "next": "/admin/"}
    if code is not None:
        data["otp_token"] = code
    return client.post("/admin/login/?next=/admin/", data, **extra)
