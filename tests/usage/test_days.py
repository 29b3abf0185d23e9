from __future__ import annotations

from datetime import UTC, date, datetime

from pytest_django import Settings

from usage.days import budget_day, day_start, next_day_start


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_the_budget_day_is_the_calendar_day_in_the_budget_timezone(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "America/New_York"
    assert budget_day(epoch("2027-01-15T04:59:59")) == date(2027, 1, 14)
    assert budget_day(epoch("2027-01-15T05:00:00")) == date(2027, 1, 15)
    assert next_day_start(epoch("2027-01-15T12:00:00")) == epoch("2027-01-16T05:00:00")


def test_a_day_with_a_daylight_saving_change_is_23_or_25_hours_long(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "Europe/Berlin"
    assert day_start(date(2027, 3, 29)) - day_start(date(2027, 3, 28)) == 23 * 3600
    assert day_start(date(2027, 11, 1)) - day_start(date(2027, 10, 31)) == 25 * 3600


def test_utc_days_begin_at_midnight_utc(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    assert next_day_start(epoch("2027-01-15T23:59:59.5")) == epoch("2027-01-16T00:00:00")
