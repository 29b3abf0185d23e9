from __future__ import annotations

from django import template

from dashboard.money import usd_text

register = template.Library()


@register.filter
def usd(micro: int) -> str:
    """Micro-dollars as dollars: ``{{ spend.spent_micro|usd }}``."""
    return usd_text(micro)


BREAKER_STATES = {"closed": "Closed", "open": "Open", "half_open": "Half-open (probing)"}


@register.filter
def breaker_state(state: str) -> str:
    return BREAKER_STATES.get(state, state)


@register.filter
def percent(rate: float | None) -> str:
    """A share as a percentage, or a dash when there is none (no attempts)."""
    return "\N{EN DASH}" if rate is None else f"{rate * 100:.1f} %"
