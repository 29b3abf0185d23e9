"""Money as people read it on the dashboard."""

from __future__ import annotations

from decimal import Decimal

from billing.pricing import MICRO_PER_USD


def usd_text(micro: int) -> str:
    """``$1,234.50`` from a dollar up (and for zero); below, enough places to show it."""
    value = Decimal(int(micro)) / MICRO_PER_USD
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    text = f"{value:.6f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{value:.2f}"
    return f"${text}"
