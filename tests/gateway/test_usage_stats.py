from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from pytest_django import Settings

from tests.billing.factories import create_records
from tests.conftest import TestClock
from tests.devices.support import Registered
from usage.days import budget_day

pytestmark = pytest.mark.django_db(transaction=True)


def test_usage_stats_give_the_callers_own_figures_limits_and_models(
    client: Client, make_device: Callable[..., Registered], clock: TestClock, settings: Settings
) -> None:
    settings.RATE_LIMITS = {
        **settings.RATE_LIMITS,
        "free": {"device_per_day": 7, "ip_per_day": 9, "user_per_day": 11, "device_per_minute": 3},
    }
    registered = make_device("approved", owner="acme")
    other = make_device("approved")
    today = budget_day(clock.now())
    create_records(
        2,
        device_id=registered.id,
        budget_day=today,
        model="llama3-8b-instruct",
        tokens_in=10,
        tokens_out=5,
        cost_usd=Decimal("0.000002"),
    )
    create_records(
        1,
        device_id=registered.id,
        budget_day=today,
        model="openai-gpt-4o",
        tokens_in=100,
        tokens_out=1,
        cost_usd=Decimal("0.25"),
        status="upstream_error",
    )
    if today.day > 1:
        create_records(
            1,
            device_id=registered.id,
            budget_day=today - timedelta(days=1),
            model="openai-gpt-4o",
            tokens_in=1,
            tokens_out=1,
            cost_usd=Decimal("1"),
        )
    create_records(5, device_id=other.id, budget_day=today, cost_usd=Decimal("9"))

    response = client.get("/v1/usage/stats", HTTP_AUTHORIZATION=f"Bearer {registered.token}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["device"] == {"id": registered.id, "status": "approved", "tier": "free"}
    assert body["today"] == {"requests": 3, "tokens": 131, "costUsd": 0.250004}
    yesterday = 1 if today.day > 1 else 0
    assert body["month"]["requests"] == 3 + yesterday
    limits = body["limits"]
    assert limits["device"]["limit"] == 7 and limits["ip"]["limit"] == 9
    assert limits["user"]["limit"] == 11 and limits["burst"]["limit"] == 3
    assert all(limits[name]["resetAt"].endswith("Z") for name in ("device", "ip", "user", "burst"))
    models = {row["model"]: row for row in body["byModel"]}
    assert models["llama3-8b-instruct"] == {
        "model": "llama3-8b-instruct",
        "requests": 2,
        "tokens": 30,
        "costUsd": 0.000004,
    }


def test_usage_stats_show_no_user_limit_for_a_device_without_an_owner(
    client: Client, approved_device: Registered
) -> None:
    response = client.get("/v1/usage/stats", HTTP_AUTHORIZATION=f"Bearer {approved_device.token}")
    assert response.status_code == 200
    assert response.json()["limits"]["user"] is None
    assert response.json()["today"] == {"requests": 0, "tokens": 0, "costUsd": 0.0}


def test_usage_stats_need_a_device_token(client: Client) -> None:
    response = client.get("/v1/usage/stats")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
