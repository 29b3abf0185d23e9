"""The admin site: Django's, with the gateway's login rules.

Installed as the default site (``GatewayAdminConfig.default_site``), so every
app's ``admin.site.register`` and ``@admin.register`` land here. Access needs
``gateway.core.permissions.is_verified_staff``: staff, and a TOTP code at login
when ``ADMIN_REQUIRE_2FA`` is on. Failed logins (either factor) are counted by
``gateway.staff.login_guard``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path
from django_otp.plugins.otp_totp.models import TOTPDevice

from gateway.core.permissions import abilities_of, is_verified_staff
from gateway.staff.admin_ip_blocks import ip_blocks_view
from gateway.staff.login_guard import record_second_factor_failure

TWO_FACTOR_INVALID_LOGIN = (
    "Please enter the correct %(username)s, password and authentication code for a staff account."
)


class _CodeInput(forms.TextInput):
    """A code is good for one login at most: never render a submitted one again."""

    def format_value(self, value: Any) -> str | None:
        return None


class AdminLoginForm(AdminAuthenticationForm):
    """Username and password, plus the TOTP code when ``ADMIN_REQUIRE_2FA`` is on.

    Both factors are checked in one step and fail with one message, so the
    form never tells whether the password alone was right.
    """

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=16,
        widget=_CodeInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}
        ),
    )

    def __init__(self, request: HttpRequest | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.requires_token = bool(settings.ADMIN_REQUIRE_2FA)
        if self.requires_token:
            self.error_messages = {
                **self.error_messages,
                "invalid_login": TWO_FACTOR_INVALID_LOGIN,
            }
        else:
            del self.fields["otp_token"]

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        user = self.get_user()
        if self.requires_token and user is not None:
            device, is_throttled = _verified_totp_device(user, cleaned_data.get("otp_token") or "")
            if device is None:
                if not is_throttled:
                    record_second_factor_failure(request=self.request, username=user.get_username())
                self.user_cache = None
                raise self.get_invalid_login_error()
            # django_otp's user_logged_in receiver stores it in the session.
            user.otp_device = device  # type: ignore[attr-defined]
        return cleaned_data


def _verified_totp_device(user: Any, token: str) -> tuple[TOTPDevice | None, bool]:
    """(the device accepting ``token`` or None, whether every device was in backoff).

    Users normally hold one device (``enroll_totp`` replaces it). A device in
    django-otp's backoff after recent failures refuses without reading the
    code: such a refusal is not another guess.
    """
    token = token.strip().replace(" ", "")
    is_throttled = True
    # select_for_update: two logins racing with one code cannot both pass
    # (verify_token records the code's time step against replay).
    with transaction.atomic():
        devices = TOTPDevice.objects.devices_for_user(user, confirmed=True).select_for_update()
        for device in devices:
            is_allowed, _ = device.verify_is_allowed()
            if not is_allowed:
                continue
            is_throttled = False
            if device.verify_token(token):
                return device, False
    return None, is_throttled


class GatewayAdminSite(admin.AdminSite):
    site_header = "Hanzo AI Gateway"
    site_title = "Hanzo AI Gateway"
    index_title = "Administration"
    login_form = AdminLoginForm
    login_template = "admin/gateway_login.html"

    def has_permission(self, request: HttpRequest) -> bool:
        return is_verified_staff(request.user)

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        # The gateway's own pages show only the controls the user may use.
        return {**super().each_context(request), "may": abilities_of(request.user)}

    def get_urls(self) -> list[URLPattern | URLResolver]:
        def ip_blocks(request: HttpRequest) -> HttpResponse:
            return ip_blocks_view(request, context=self.each_context(request))

        own = [path("ip-blocks/", self.admin_view(ip_blocks), name="ip_blocks")]
        return own + super().get_urls()
