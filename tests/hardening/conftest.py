"""The hardening tests attack real gateway processes: the proxy tests' fixtures."""

from __future__ import annotations

from tests.proxy.conftest import free_token, gateway, paid_token, start_gateway

__all__ = ["free_token", "gateway", "paid_token", "start_gateway"]
