from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum

from billing.models import DailyRollup
from billing.services import rollup_day
from tests.billing.factories import create_records, record_data
from tests.conftest import TestClock
from usage.days import budget_day
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

NOV = date(2026, 11, 1)


def _report(*args: str) -> str:
    out = io.StringIO()
    call_command("cost_report", *args, stdout=out)
    return out.getvalue()


def _json_report(*args: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_report(*args, "--format", "json"))
    return report


def _random_ledger(rng: random.Random, days: list[date], count: int) -> None:
    models = [
        ("llama3-8b-instruct", "digitalocean"),
        ("openai-gpt-4o", "openai"),
        ("anthropic-claude-4-sonnet", "anthropic"),
    ]
    records = []
    for _ in range(count):
        model, provider = rng.choice(models)
        records.append(
            record_data(
                budget_day=rng.choice(days),
                model=model,
                provider=provider,
                tier=rng.choice(["free", "paid"]),
                device_id=f"dev_{rng.randrange(15):02d}",
                tokens_in=rng.randrange(5000),
                tokens_out=rng.randrange(2000),
                cost_usd=Decimal(rng.randrange(0, 50_000)) / 1_000_000,
                status=rng.choice(["ok", "ok", "upstream_error", "client_disconnected"]),
            ).to_model()
        )
    UsageRecord.objects.bulk_create(records)


def _ledger_totals(start: date, end: date) -> tuple[int, int, Decimal]:
    rows = UsageRecord.objects.filter(budget_day__range=(start, end))
    sums = rows.aggregate(i=Sum("tokens_in"), o=Sum("tokens_out"), c=Sum("cost_usd"))
    return rows.count(), (sums["i"] or 0) + (sums["o"] or 0), sums["c"] or Decimal(0)


def test_the_json_report_has_the_spec_shape_and_its_totals_equal_the_ledger() -> None:
    rng = random.Random(1)
    _random_ledger(rng, [NOV + timedelta(days=n) for n in range(30)], 400)
    _random_ledger(rng, [date(2026, 10, 31), date(2026, 12, 1)], 50)  # outside November
    report = _json_report("--month", "2026-11")
    assert list(report) == [
        "from",
        "to",
        "totalCostUsd",
        "totalRequests",
        "totalTokens",
        "byDay",
        "byModel",
        "byProvider",
        "byTier",
        "topDevices",
    ]
    assert (report["from"], report["to"]) == ("2026-11-01", "2026-11-30")
    requests, tokens, cost = _ledger_totals(date(2026, 11, 1), date(2026, 11, 30))
    assert report["totalRequests"] == requests == 400
    assert report["totalTokens"] == tokens
    assert Decimal(str(report["totalCostUsd"])) == cost
    for section, key in [
        ("byDay", "day"),
        ("byModel", "model"),
        ("byProvider", "provider"),
        ("byTier", "tier"),
    ]:
        rows = report[section]
        assert all(set(row) == {key, "requests", "tokens", "costUsd"} for row in rows)
        assert sum(row["requests"] for row in rows) == requests
        assert sum(row["tokens"] for row in rows) == tokens
        assert sum(Decimal(str(row["costUsd"])) for row in rows) == cost
    assert [row["day"] for row in report["byDay"]] == sorted(row["day"] for row in report["byDay"])


def test_top_devices_are_the_ten_most_expensive_in_order() -> None:
    for n in range(12):
        create_records(n + 1, budget_day=NOV, device_id=f"dev_{n:02d}", cost_usd=Decimal("0.5"))
    devices = _json_report("--month", "2026-11")["topDevices"]
    assert [row["deviceId"] for row in devices] == [f"dev_{n:02d}" for n in range(11, 1, -1)]
    assert devices[0] == {"deviceId": "dev_11", "requests": 12, "tokens": 1800, "costUsd": 6.0}


def test_money_is_exact_to_the_micro_dollar_in_json() -> None:
    create_records(7, budget_day=NOV, cost_usd=Decimal("0.000001"))
    create_records(1, budget_day=NOV, cost_usd=Decimal("12345.678901"))
    report = _json_report("--day", "2026-11-01")
    assert report["totalCostUsd"] == 12345.678908
    assert '"totalCostUsd": 12345.678908' in _report("--day", "2026-11-01", "--format", "json")


def test_a_day_report_covers_only_that_budget_day() -> None:
    create_records(2, budget_day=NOV)
    create_records(5, budget_day=NOV + timedelta(days=1))
    report = _json_report("--day", "2026-11-02")
    assert (report["from"], report["to"], report["totalRequests"]) == (
        "2026-11-02",
        "2026-11-02",
        5,
    )


def test_the_default_period_is_the_current_budget_month(clock: TestClock) -> None:
    today = budget_day(clock.now())
    create_records(3, budget_day=today)
    report = _json_report()
    assert report["from"] == today.replace(day=1).isoformat()
    assert report["to"] >= today.isoformat()
    assert report["totalRequests"] == 3


def test_an_empty_period_reports_zeros() -> None:
    report = _json_report("--month", "2020-02")
    assert (report["from"], report["to"]) == ("2020-02-01", "2020-02-29")
    assert (report["totalRequests"], report["totalTokens"], report["totalCostUsd"]) == (0, 0, 0)
    assert report["byDay"] == [] and report["topDevices"] == []


def test_csv_and_table_carry_the_same_totals() -> None:
    create_records(3, budget_day=NOV, cost_usd=Decimal("0.250000"), model="openai-gpt-4o")
    rows = list(csv.reader(io.StringIO(_report("--month", "2026-11", "--format", "csv"))))
    assert rows[0] == ["section", "key", "requests", "tokens", "cost_usd"]
    assert rows[1] == ["total", "2026-11-01..2026-11-30", "3", "450", "0.750000"]
    assert ["model", "openai-gpt-4o", "3", "450", "0.750000"] in rows
    assert ["device", "dev_alpha", "3", "450", "0.750000"] in rows
    table = _report("--month", "2026-11")
    assert "Total: $0.750000  requests 3  tokens 450" in table
    assert "openai-gpt-4o" in table and "Top 10 devices" in table


@pytest.mark.parametrize(
    "args",
    [
        ["--month", "2026-13"],
        ["--month", "2026-1"],
        ["--month", "november"],
        ["--day", "2026-02-30"],
        ["--day", "yesterday"],
        ["--month", "2026-11", "--day", "2026-11-01"],
        ["--format", "xml"],
    ],
)
def test_bad_input_is_a_one_line_command_error(args: list[str]) -> None:
    with pytest.raises(CommandError) as error:
        _report(*args)
    assert "\n" not in str(error.value)


def test_folding_a_day_is_idempotent_and_matches_its_records() -> None:
    rng = random.Random(2)
    _random_ledger(rng, [NOV], 200)
    first = rollup_day(NOV)
    snapshot = sorted(DailyRollup.objects.values_list("device_id", "model", "tier", "requests"))
    assert rollup_day(NOV) == first
    assert sorted(DailyRollup.objects.values_list("device_id", "model", "tier", "requests")) == (
        snapshot
    )
    assert DailyRollup.objects.aggregate(n=Sum("requests"))["n"] == 200
    ledger = UsageRecord.objects.aggregate(c=Sum("cost_usd"))["c"]
    assert DailyRollup.objects.aggregate(c=Sum("cost_usd"))["c"] == ledger


def test_a_late_record_is_picked_up_by_folding_again() -> None:
    create_records(2, budget_day=NOV)
    rollup_day(NOV)
    create_records(1, budget_day=NOV)
    rollup_day(NOV)
    assert DailyRollup.objects.aggregate(n=Sum("requests"))["n"] == 3


def test_pruned_days_are_reported_from_their_rollups_with_the_same_totals() -> None:
    rng = random.Random(3)
    days = [NOV + timedelta(days=n) for n in range(5)]
    _random_ledger(rng, days, 300)
    before = _json_report("--month", "2026-11")
    for day in days[:3]:
        rollup_day(day)
    UsageRecord.objects.filter(budget_day__in=days[:3]).delete()  # retention
    assert rollup_day(days[0]) > 0  # folding a pruned day keeps its rollups
    after = _json_report("--month", "2026-11")
    assert after == before


def test_a_day_with_records_ignores_stale_rollups() -> None:
    create_records(2, budget_day=NOV, cost_usd=Decimal("1"))
    rollup_day(NOV)
    create_records(1, budget_day=NOV, cost_usd=Decimal("1"))  # not folded yet
    assert _json_report("--day", "2026-11-01")["totalRequests"] == 3
