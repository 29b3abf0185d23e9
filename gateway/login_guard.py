"""Brute-force protection on the admin login, through django-axes.

Axes counts failed logins per (username, client IP) in the database and
refuses the pair for a cool-off once the limit is reached. Two additions:

* a wrong TOTP code counts as a failure too (Axes only sees the password
  check), so the second factor cannot be guessed behind a known password;
* ``authenticate()`` without a request (a management command, the test
  client's ``login()``) is not the admin login: it is passed on to the next
  backend instead of raising, as Axes' own backend would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest


class LoginGuardBackend(AxesStandaloneBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        super().authenticate(request, username, password, **kwargs)
        return None


def cool_off(request: HttpRequest | None = None) -> timedelta:
    """How long a locked (username, IP) pair stays locked (read at call time)."""
    return timedelta(minutes=settings.ADMIN_LOGIN_COOLOFF_MINUTES)


def record_second_factor_failure(*, request: HttpRequest | None, username: str) -> None:
    """Count a wrong TOTP code against (username, IP) like a wrong password."""
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
