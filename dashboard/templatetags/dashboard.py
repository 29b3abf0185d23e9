from __future__ import annotations

from django import template

from dashboard.money import usd_text

register = template.Library()


@register.filter
def usd(micro: int) -> str:
    """Micro-dollars as dollars: ``{{ spend.spent_micro|usd }}``."""
    return usd_text(micro)
