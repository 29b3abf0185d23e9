"""Chart geometry: what the SVG draws is proportional to the money."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from dashboard.charts import bar_list, column_chart, gauge
from dashboard.money import usd_text
from dashboard.selectors import Amount, Spend, spend_by_day
from tests.dashboard.support import record_usage


def spend(spent: int, budget: int = 10_000_000, reserved: int = 0, warning: int = 80) -> Spend:
    return Spend(date(2026, 11, 26), spent, reserved, budget, warning, False)


def test_a_half_spent_budget_fills_the_gauge_to_its_top() -> None:
    drawn = gauge(spend(5_000_000))
    assert drawn.spent == "M 20.0 100.0 A 80.0 80.0 0 0 1 100.0 20.0"
    assert drawn.percent_text == "50%"
    assert not drawn.is_over_warning


def test_the_gauge_turns_to_warning_exactly_at_the_warning_percent() -> None:
    assert not gauge(spend(7_999_999)).is_over_warning
    assert gauge(spend(8_000_000)).is_over_warning


def test_reservations_continue_the_arc_and_overspend_is_capped_at_full() -> None:
    drawn = gauge(spend(5_000_000, reserved=2_500_000))
    assert drawn.reserved.startswith("M 100.0 20.0 A")
    full = gauge(spend(12_000_000))
    assert full.spent.endswith("180.0 100.0")
    assert full.percent_text == "120%"


def test_a_zero_budget_draws_an_empty_gauge() -> None:
    drawn = gauge(spend(0, budget=0))
    assert (drawn.spent, drawn.percent_text) == ("", "no budget")


def amounts(*costs: int) -> list[Amount]:
    return [Amount(f"{index:02d}", cost, 1, 10) for index, cost in enumerate(costs)]


def test_columns_are_proportional_on_a_rounded_scale() -> None:
    chart = column_chart(amounts(0, 1_000_000, 3_000_000))
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0
    assert heights[2] == pytest.approx(3 * heights[1])
    assert [tick.label for tick in chart.y_ticks] == ["$0.00", "$2.50", "$5.00"]
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    assert not chart.is_empty


def test_day_labels_are_every_fifth_counting_back_from_today() -> None:
    chart = column_chart(amounts(*([1] * 30)))
    assert [tick.label for tick in chart.x_ticks] == ["04", "09", "14", "19", "24", "29"]


def test_an_all_zero_series_is_empty() -> None:
    assert column_chart(amounts(0, 0)).is_empty


def test_bar_lengths_are_proportional_to_cost() -> None:
    first, second = bar_list(amounts(4_000_000, 1_000_000))
    assert (first.percent, second.percent) == (100, 25)
    assert first.value == "$4.00" and second.value == "$1.00"
    assert bar_list([]) == []


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "$0.00"), (1_234_500_000, "$1,234.50"), (250_000, "$0.25"), (4_200, "$0.0042")],
)
def test_money_is_written_for_people(micro: int, text: str) -> None:
    assert usd_text(micro) == text


@pytest.mark.django_db
def test_the_daily_series_has_thirty_days_with_zeros_for_quiet_ones() -> None:
    today = date(2026, 11, 26)
    record_usage("dev_a", day=today, cost="1.000000")
    record_usage("dev_a", day=today, cost="0.500000")
    record_usage("dev_b", day=today - timedelta(days=29), cost="2.000000")
    record_usage("dev_b", day=today - timedelta(days=30), cost="9.000000")
    series = spend_by_day(today)
    assert len(series) == 30
    assert series[0].title == "2026-10-28" and series[0].cost_micro == 2_000_000
    assert series[-1].cost_micro == 1_500_000 and series[-1].requests == 2
    assert sum(amount.cost_micro for amount in series[1:-1]) == 0
