"""Usage records for billing and ledger tests."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from usage.models import UsageRecord
from usage.services import UsageRecordData

DAY = date(2026, 11, 26)


def record_data(**overrides: Any) -> UsageRecordData:
    day = overrides.get("budget_day", DAY)
    values: dict[str, Any] = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "device_id": "dev_alpha",
        "owner": "",
        "ip": "203.0.113.5",
        "model": "llama3-8b-instruct",
        "provider": "digitalocean",
        "tier": "free",
        "tokens_in": 100,
        "tokens_out": 50,
        "cost_usd": Decimal("0.000015"),
        "is_estimated": False,
        "status": "ok",
        "is_streamed": False,
        "duration_ms": 120,
        "budget_day": day,
        "created_at": datetime.combine(day, time(12), tzinfo=UTC),
    }
    values.update(overrides)
    return UsageRecordData(**values)


def create_records(count: int = 1, **overrides: Any) -> list[UsageRecord]:
    return UsageRecord.objects.bulk_create(
        [record_data(**overrides).to_model() for _ in range(count)]
    )
