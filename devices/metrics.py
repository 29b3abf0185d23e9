"""The devices-by-status gauge for ``/metrics``: one GROUP BY when scraped."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from devices.models import Device
from devices.selectors import device_counts_by_status
from gateway.core.db import run_sync
from gateway.core.errors import GatewayError
from gateway.core.metrics import gauge

DATABASE_UP = "1 when the database answers."


async def device_gauges() -> list[GaugeMetricFamily]:
    try:
        counts = await run_sync(device_counts_by_status)
    except GatewayError:  # the database is down: the scrape still answers, and says so
        return [gauge("hanzo_database_up", DATABASE_UP, 0)]
    family = GaugeMetricFamily(
        "hanzo_devices", "Registered devices by (effective) status.", labels=["status"]
    )
    for status in Device.Status.values:
        family.add_metric([status], counts.get(status, 0))
    return [gauge("hanzo_database_up", DATABASE_UP, 1), family]
