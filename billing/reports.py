"""The cost report (SPEC section 4): spend by day, model, provider, tier, top devices.

Each dimension is one GROUP BY in the database over the period's usage
records (filtered on ``budget_day``, the leading column of the
``usage_day_model`` index), merged with the DailyRollup rows of days whose
records were pruned. The totals are the sum of the by-day rows, so they
equal the ledger (records plus rollups of pruned days) by construction.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from billing.pricing import usd_number
from billing.selectors import UsageRow, pruned_days, usage_groups

TOP_DEVICES = 10

# (JSON list name, JSON key name, ledger field, table/CSV heading)
DIMENSIONS = (
    ("byDay", "day", "budget_day", "day"),
    ("byModel", "model", "model", "model"),
    ("byProvider", "provider", "provider", "provider"),
    ("byTier", "tier", "tier", "tier"),
    ("topDevices", "deviceId", "device_id", "device"),
)


@dataclass
class CostReport:
    start: date
    end: date
    sections: dict[str, list[UsageRow]]

    @property
    def total_requests(self) -> int:
        return sum(row.requests for row in self.sections["byDay"])

    @property
    def total_tokens(self) -> int:
        return sum(row.tokens for row in self.sections["byDay"])

    @property
    def total_cost_usd(self) -> Decimal:
        return sum((row.cost_usd for row in self.sections["byDay"]), Decimal("0.000000"))


def month_bounds(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def cost_report(*, start: date, end: date) -> CostReport:
    """Aggregate budget days [start, end] (inclusive)."""
    pruned = pruned_days(start, end)
    sections = {
        name: usage_groups(
            start=start,
            end=end,
            by=field,
            pruned=pruned,
            limit=TOP_DEVICES if name == "topDevices" else None,
        )
        for name, _key, field, _heading in DIMENSIONS
    }
    return CostReport(start=start, end=end, sections=sections)


def as_json(report: CostReport) -> dict[str, Any]:
    data: dict[str, Any] = {
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "totalCostUsd": usd_number(report.total_cost_usd),
        "totalRequests": report.total_requests,
        "totalTokens": report.total_tokens,
    }
    for name, key, _field, _heading in DIMENSIONS:
        data[name] = [row.json(key) for row in report.sections[name]]
    return data


def render_json(report: CostReport) -> str:
    return json.dumps(as_json(report), indent=2)


def _key_text(row: UsageRow) -> str:
    return row.key.isoformat() if isinstance(row.key, date) else str(row.key)


def render_csv(report: CostReport) -> str:
    """One table: ``section,key,requests,tokens,cost_usd``; the first row is the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "requests", "tokens", "cost_usd"])
    writer.writerow(
        [
            "total",
            f"{report.start.isoformat()}..{report.end.isoformat()}",
            report.total_requests,
            report.total_tokens,
            f"{report.total_cost_usd:.6f}",
        ]
    )
    for name, _key, _field, heading in DIMENSIONS:
        for row in report.sections[name]:
            writer.writerow(
                [heading, _key_text(row), row.requests, row.tokens, f"{row.cost_usd:.6f}"]
            )
    return out.getvalue()


def render_table(report: CostReport) -> str:
    lines = [
        f"Cost report {report.start.isoformat()} .. {report.end.isoformat()}",
        f"Total: ${report.total_cost_usd:.6f}  requests {report.total_requests}"
        f"  tokens {report.total_tokens}",
    ]
    for name, _key, _field, heading in DIMENSIONS:
        rows = report.sections[name]
        title = f"Top {TOP_DEVICES} devices" if name == "topDevices" else f"By {heading}"
        lines.append("")
        lines.append(title)
        width = max([len(heading), *(len(_key_text(row)) for row in rows)])
        lines.append(f"  {heading:<{width}}  {'requests':>10}  {'tokens':>14}  {'cost_usd':>16}")
        if not rows:
            lines.append("  (none)")
        for row in rows:
            lines.append(
                f"  {_key_text(row):<{width}}  {row.requests:>10}  {row.tokens:>14}"
                f"  {row.cost_usd:>16.6f}"
            )
    return "\n".join(lines) + "\n"


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json}
