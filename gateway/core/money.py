"""Money: integer micro-dollars (1e-6 USD) in code and in Redis, ``Decimal`` with six
places in the database. One rounding rule, one set of conversions and formats.

``usd_to_micro`` rounds to the nearest micro-dollar (half up); every ``*_usd``
field and setting has at most six places, so it is exact for them. Costs are
computed (and rounded up, once per request) in ``billing.pricing``.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_UP, Decimal

MICRO_PER_USD = 1_000_000
SIX_PLACES = Decimal("0.000001")


@functools.lru_cache(maxsize=256)  # settings are converted on every admission
def usd_to_micro(value: Decimal | int) -> int:
    """USD -> micro-dollars, to the nearest micro-dollar (exact for *_usd values)."""
    if isinstance(value, float):
        raise TypeError("money is never a float")
    micro = (Decimal(value) * MICRO_PER_USD).to_integral_value(rounding=ROUND_HALF_UP)
    return int(micro)


def micro_to_usd(micro: int) -> Decimal:
    """Micro-dollars -> USD with exactly six decimal places."""
    return (Decimal(int(micro)) / MICRO_PER_USD).quantize(SIX_PLACES)


def usd_number(value: Decimal) -> float:
    """A USD amount as a JSON number that prints exactly to six places.

    A double holds any decimal of up to 15 significant digits exactly enough
    that its shortest repr is that decimal; six places leave nine integer
    digits (a billion dollars), which no report here reaches.
    """
    quantized = Decimal(value).quantize(SIX_PLACES)
    if abs(quantized) >= Decimal(10) ** 9:
        raise ValueError("amount too large to print exactly as a JSON number")
    return float(quantized)


def usd_float(micro: int) -> float:
    """Micro-dollars as a float of dollars, for Prometheus only (it takes floats)."""
    return micro / MICRO_PER_USD


def usd_text(micro: int) -> str:
    """``$1,234.50`` from a dollar up (and for zero); below, enough places to show it."""
    value = Decimal(int(micro)) / MICRO_PER_USD
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    text = f"{value:.6f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{value:.2f}"
    return f"${text}"
