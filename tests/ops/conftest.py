"""Operability tests run against real gateway processes: the proxy tests' fixtures."""

from __future__ import annotations

from tests.devices.conftest import staff_api
from tests.proxy.conftest import free_token, gateway, paid_token, start_gateway

__all__ = ["free_token", "gateway", "paid_token", "staff_api", "start_gateway"]
