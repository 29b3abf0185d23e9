"""Money as people read it on the dashboard (``gateway.core.money``)."""

from __future__ import annotations

from gateway.core.money import usd_text

__all__ = ["usd_text"]
