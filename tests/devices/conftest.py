"""Personas and helpers for device tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.backends.utils import CursorWrapper
from django.test import Client
from pytest_django import Settings

from devices import activity, auth
from gateway.core import store
from tests.fakes.slack import fake_slack  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    # Staff logins are set up in many tests; PBKDF2's cost buys nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _empty_device_caches() -> Iterator[None]:
    auth.clear_cache()
    activity.take()
    yield
    auth.clear_cache()
    activity.take()


@pytest.fixture
def count_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run from now on, on any thread (sync_to_async included)."""
    statements: list[str] = []
    # A private method of Django's, absent from django-stubs.
    original = CursorWrapper._execute_with_wrappers  # type: ignore[attr-defined]

    def counting(
        self: CursorWrapper, sql: str, params: Any, many: bool, executor: Callable[..., Any]
    ) -> Any:
        statements.append(sql)
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    return statements


@pytest.fixture
def staff_api(admin_user: User) -> Client:
    """A staff session that must send its CSRF token, like a browser."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get("/admin/")  # sets the csrftoken cookie
    client.defaults["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    return client


@pytest.fixture
async def fresh_store_clients() -> AsyncIterator[None]:
    """Closes this test's asyncio Redis clients: each async test has its own event loop."""
    yield
    await store.close_async_clients()
