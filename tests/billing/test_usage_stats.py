from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from pytest_django import Settings

from billing.selectors import usage_stats
from billing.services import rollup_day
from tests.billing.factories import create_records
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

NOW = datetime.fromisoformat("2026-11-26T15:00:00+00:00").timestamp()
TODAY = date(2026, 11, 26)


def test_stats_give_today_the_month_and_the_months_models(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    create_records(2, budget_day=TODAY, tokens_in=10, tokens_out=5, cost_usd=Decimal("0.1"))
    create_records(
        1,
        budget_day=TODAY,
        status="upstream_error",
        tokens_in=7,
        tokens_out=0,
        cost_usd=Decimal("0"),
    )
    create_records(
        3,
        budget_day=date(2026, 11, 2),
        model="openai-gpt-4o",
        provider="openai",
        tokens_in=100,
        tokens_out=100,
        cost_usd=Decimal("0.333333"),
    )
    create_records(4, budget_day=date(2026, 10, 31), cost_usd=Decimal("5"))  # last month
    create_records(5, budget_day=TODAY, device_id="dev_other", cost_usd=Decimal("5"))
    stats = usage_stats(device_id="dev_alpha", now=NOW)
    assert stats["today"] == {"requests": 3, "tokens": 37, "costUsd": 0.2}
    assert stats["month"] == {"requests": 6, "tokens": 637, "costUsd": 1.199999}
    assert stats["byModel"] == [
        {"model": "openai-gpt-4o", "requests": 3, "tokens": 600, "costUsd": 0.999999},
        {"model": "llama3-8b-instruct", "requests": 3, "tokens": 37, "costUsd": 0.2},
    ]


def test_a_device_without_usage_gets_zeros(settings: Settings) -> None:
    stats = usage_stats(device_id="dev_nobody", now=NOW)
    assert stats == {
        "today": {"requests": 0, "tokens": 0, "costUsd": 0.0},
        "month": {"requests": 0, "tokens": 0, "costUsd": 0.0},
        "byModel": [],
    }


def test_today_is_the_budget_day_in_the_budget_timezone(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "Asia/Tokyo"  # 15:00 UTC is already the 27th there
    create_records(1, budget_day=TODAY + timedelta(days=1))
    create_records(2, budget_day=TODAY)
    stats = usage_stats(device_id="dev_alpha", now=NOW)
    assert stats["today"]["requests"] == 1
    assert stats["month"]["requests"] == 3


def test_pruned_days_of_the_month_still_count(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    create_records(4, budget_day=date(2026, 11, 3), cost_usd=Decimal("0.25"))
    create_records(1, budget_day=TODAY, cost_usd=Decimal("0.5"))
    before = usage_stats(device_id="dev_alpha", now=NOW)
    rollup_day(date(2026, 11, 3))
    UsageRecord.objects.filter(budget_day=date(2026, 11, 3)).delete()
    assert usage_stats(device_id="dev_alpha", now=NOW) == before
    assert before["month"] == {"requests": 5, "tokens": 750, "costUsd": 1.5}
