"""Chart geometry for server-rendered SVG: numbers in, shapes and labels out.

Templates draw what these functions compute (no script, no inline style:
the pages' CSP forbids both); colours come from classes in
static/dashboard/dashboard.css. Coordinates are in each chart's viewBox, so
the SVG scales to any screen width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dashboard.money import usd_text
from dashboard.selectors import Amount, Spend


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class ColumnChart:
    width: int
    height: int
    plot_left: float
    plot_right: float
    baseline: float
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    is_empty: bool

    @property
    def y_label_x(self) -> float:
        return self.plot_left - 4

    @property
    def x_label_y(self) -> float:
        return self.baseline + 14

    @property
    def middle(self) -> tuple[float, float]:
        return ((self.plot_left + self.plot_right) / 2, self.baseline / 2)


@dataclass(frozen=True)
class BarRow:
    """One row of a horizontal bar list; the bar is ``percent`` of the longest."""

    label: str
    value: str
    title: str
    percent: float


@dataclass(frozen=True)
class Gauge:
    track: str  # SVG path data
    spent: str
    reserved: str
    warning_line: tuple[float, float, float, float]
    percent_text: str
    is_over_warning: bool


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (>= 1)."""
    if value <= 1:
        return 1
    magnitude: int = 10 ** (len(str(value)) - 1)  # exact, unlike log10 on floats
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def column_chart(amounts: Sequence[Amount], *, label_every: int = 5) -> ColumnChart:
    """Vertical bars of cost, one per amount (e.g. per day), with a labelled scale."""
    # Small enough that its text stays legible on a phone once scaled.
    width, height = 360, 170
    left, right, top, bottom = 42.0, 356.0, 8.0, 148.0
    top_value = _nice_ceiling(max((amount.cost_micro for amount in amounts), default=0))
    slot = (right - left) / max(1, len(amounts))
    bars = []
    for index, amount in enumerate(amounts):
        bar_height = (bottom - top) * amount.cost_micro / top_value
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 2),
                y=round(bottom - bar_height, 2),
                width=round(slot * 0.7, 2),
                height=round(bar_height, 2),
                label=amount.label,
                value=usd_text(amount.cost_micro),
                title=f"{amount.title or amount.label}: {usd_text(amount.cost_micro)}, "
                f"{amount.requests} requests",
            )
        )
    last = len(amounts) - 1
    x_ticks = [
        Tick(round(left + (index + 0.5) * slot, 2), amount.label)
        for index, amount in enumerate(amounts)
        if (last - index) % label_every == 0
    ]
    y_ticks = [
        Tick(round(bottom - (bottom - top) * share, 2), usd_text(int(top_value * share)))
        for share in (0, 0.5, 1)
    ]
    return ColumnChart(
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        baseline=bottom,
        bars=bars,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        is_empty=not any(amount.cost_micro for amount in amounts),
    )


def bar_list(amounts: Sequence[Amount]) -> list[BarRow]:
    """Horizontal bars, one row per amount (e.g. per model), the largest at 100%.

    Drawn as HTML rows (label, bar, value) so the text keeps its size on a
    phone; each bar is a tiny SVG stretched to its cell.
    """
    largest = max((amount.cost_micro for amount in amounts), default=0)
    return [
        BarRow(
            label=amount.label,
            value=usd_text(amount.cost_micro),
            title=f"{amount.title or amount.label}: {usd_text(amount.cost_micro)}, "
            f"{amount.requests} requests, {amount.tokens} tokens",
            percent=round(100 * amount.cost_micro / largest, 2) if largest else 0.0,
        )
        for amount in amounts
    ]


_CX, _CY, _R = 100.0, 100.0, 80.0


def _point(share: float) -> tuple[float, float]:
    """The point ``share`` of the way along the half circle, left to right over the top."""
    angle = math.pi * (1 - share)
    return round(_CX + _R * math.cos(angle), 2), round(_CY - _R * math.sin(angle), 2)


def _arc(start: float, end: float) -> str:
    start, end = max(0.0, min(1.0, start)), max(0.0, min(1.0, end))
    if end <= start:
        return ""
    (x0, y0), (x1, y1) = _point(start), _point(end)
    return f"M {x0} {y0} A {_R} {_R} 0 0 1 {x1} {y1}"


def gauge(spend: Spend) -> Gauge:
    """A half-circle gauge of today's spend (and reservations) against the budget."""
    budget = spend.budget_micro
    spent_share = spend.spent_micro / budget if budget else 0.0
    reserved_share = (spend.spent_micro + spend.reserved_micro) / budget if budget else 0.0
    warning = min(1.0, spend.warning_percent / 100)
    (wx, wy) = _point(warning)
    inner = 0.78  # the warning mark crosses the arc from 78% to 122% of the radius
    warning_line = (
        round(_CX + (wx - _CX) * inner, 2),
        round(_CY + (wy - _CY) * inner, 2),
        round(_CX + (wx - _CX) * (2 - inner), 2),
        round(_CY + (wy - _CY) * (2 - inner), 2),
    )
    return Gauge(
        track=_arc(0, 1),
        spent=_arc(0, spent_share),
        reserved=_arc(spent_share, reserved_share),
        warning_line=warning_line,
        percent_text=f"{spent_share * 100:.0f}%" if budget else "no budget",
        is_over_warning=budget > 0 and spent_share * 100 >= spend.warning_percent,
    )
