"""The retention command: old usage records go, in batches, and every report still adds up."""

from __future__ import annotations

import io
import random
from datetime import date, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import DailyRollup, PrunedDay
from billing.selectors import usage_stats
from billing.services import usage_day_seal
from tests.billing.factories import create_records
from tests.billing.test_reports import _json_report, _random_ledger
from tests.conftest import TestClock
from usage.days import budget_day
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

OCT_DAYS = [date(2026, 10, day) for day in (3, 4, 9, 17, 30, 31)]
NOV_DAYS = [date(2026, 11, 1), date(2026, 11, 2)]


@pytest.fixture
def today(clock: TestClock) -> date:
    """Budget day 2026-12-20: October is older than 40 days, November partly."""
    clock.set_offset(0)
    clock.set_offset((date(2026, 12, 20) - budget_day(clock.now())).days * 86400)
    return budget_day(clock.now())


def retention(*args: str) -> str:
    out = io.StringIO()
    call_command("retention", *args, stdout=out)
    return out.getvalue()


def reports() -> list[dict[str, Any]]:
    return [
        _json_report("--month", "2026-10"),
        _json_report("--month", "2026-11"),
        _json_report("--day", "2026-10-17"),
    ]


def test_pruning_old_days_in_batches_leaves_every_report_unchanged(today: date) -> None:
    _random_ledger(random.Random(8), OCT_DAYS + NOV_DAYS, 400)
    recent = create_records(3, budget_day=today - timedelta(days=2))
    before = reports()
    assert before[0]["totalRequests"] > 0 and before[1]["totalRequests"] > 0

    output = retention("--days", "45", "--batch-size", "7")  # prunes budget days before Nov 5

    assert "pruned 400 usage records of 8 budget days before 2026-11-05" in output
    assert not UsageRecord.objects.filter(budget_day__lt=date(2026, 11, 5)).exists()
    assert set(UsageRecord.objects.values_list("id", flat=True)) == {r.id for r in recent}
    assert sorted(PrunedDay.objects.values_list("budget_day", flat=True)) == OCT_DAYS + NOV_DAYS
    assert reports() == before
    assert DailyRollup.objects.exists()


def test_running_it_again_is_a_no_op(today: date) -> None:
    _random_ledger(random.Random(9), OCT_DAYS, 50)
    retention("--days", "45")
    before = reports()
    fields = ("budget_day", "device_id", "model", "requests", "cost_usd")
    rollups = sorted(DailyRollup.objects.values_list(*fields))
    assert "pruned 0 usage records of 0 budget days" in retention("--days", "45")
    assert reports() == before
    assert sorted(DailyRollup.objects.values_list(*fields)) == rollups


def test_a_run_stopped_half_way_through_a_day_still_reports_the_whole_day(today: date) -> None:
    _random_ledger(random.Random(10), OCT_DAYS[:2], 60)
    before = reports()
    day = OCT_DAYS[0]
    usage_day_seal(day=day)  # what a stopped run did before it died...
    half = list(UsageRecord.objects.filter(budget_day=day).values_list("id", flat=True))[::2]
    UsageRecord.objects.filter(id__in=half).delete()  # ...and the batches it managed
    assert reports() == before
    assert "pruned" in retention("--days", "45")
    assert not UsageRecord.objects.filter(budget_day__in=OCT_DAYS[:2]).exists()
    assert reports() == before


def test_a_devices_month_figures_include_its_pruned_days(today: date, clock: TestClock) -> None:
    create_records(4, device_id="dev_kept", budget_day=date(2026, 12, 1))
    create_records(3, device_id="dev_kept", budget_day=date(2026, 12, 2))
    before = usage_stats(device_id="dev_kept", now=clock.now())
    retention("--days", "10", "--batch-size", "2")  # December 1 and 2 go
    assert UsageRecord.objects.count() == 0
    assert usage_stats(device_id="dev_kept", now=clock.now()) == before
    assert before["month"]["requests"] == 7


def test_a_dry_run_counts_and_deletes_nothing(today: date) -> None:
    create_records(5, budget_day=OCT_DAYS[0])
    assert "would prune 5 usage records before 2026-11-05" in retention("--days", "45", "--dry-run")
    assert UsageRecord.objects.count() == 5
    assert not PrunedDay.objects.exists()


@pytest.mark.parametrize("args", [["--days", "0"], ["--batch-size", "0"], ["--days", "-3"]])
def test_bad_input_is_a_one_line_command_error(today: date, args: list[str]) -> None:
    with pytest.raises(CommandError) as error:
        retention(*args)
    assert "\n" not in str(error.value)
