"""Brute-force protection on the admin login, through django-axes.

Axes records failed logins in the database and keeps two counts (SPEC
section 3): one per user name, whatever the address, and one per client
network, whatever the user name; either reaching the limit refuses the
login for a cool-off. A client network is the client's IPv4 address or its
IPv6 /64 (``client_network``): one subscriber usually holds a whole /64, so
rotating addresses inside it buys no fresh attempts. Three additions:

* a wrong TOTP code counts as a failure too (Axes only sees the password
  check), so the second factor cannot be guessed behind a known password;
* a successful login forgets only that user's failures from that network
  (``forget_own_failures``). Axes' own reset would forget every failure
  counted against the user name or the network, so an attacker holding any
  staff login could wipe the count of guesses at another user's password
  by logging in between them;
* ``authenticate()`` without a request (a management command, the test
  client's ``login()``) is not the admin login: it is passed on to the next
  backend instead of raising, as Axes' own backend would.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from gateway.core.client_ip import client_ip_from_request, limit_key


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


def client_network(request: HttpRequest) -> str:
    """The address Axes counts a login attempt under (``AXES_CLIENT_IP_CALLABLE``).

    The client's IPv4 address, or the first address of its IPv6 /64: an
    address and not ``2001:db8::/64``, because Axes keeps it in an IP
    address column.
    """
    network = ipaddress.ip_network(limit_key(client_ip_from_request(request)))
    return str(network.network_address)


@receiver(user_logged_in)
def forget_own_failures(
    sender: Any, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any
) -> None:
    """After a successful admin login, forget that user's failures from that network only."""
    if request is None:
        return
    AccessAttempt.objects.filter(
        username=user.get_username(), ip_address=client_network(request)
    ).delete()


def cool_off(request: HttpRequest | None = None) -> timedelta:
    """How long a locked user name or network stays locked (read at call time)."""
    return timedelta(minutes=settings.ADMIN_LOGIN_COOLOFF_MINUTES)


def record_second_factor_failure(*, request: HttpRequest | None, username: str) -> None:
    """Count a wrong TOTP code against the user name and the network like a wrong password."""
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
