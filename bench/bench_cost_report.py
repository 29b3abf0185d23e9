"""Time ``cost_report`` on a year of synthetic usage records (not part of the suite).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/hanzo_bench \\
    REDIS_URL=redis://127.0.0.1:6379/11 SECRET_KEY=bench \\
    .venv/bin/python -m bench.bench_cost_report [ROWS]

Creates the database if needed, migrates, fills ``usage_usagerecord`` with
ROWS records (default 500,000) spread over the 365 budget days of 2026, then
times the month and day reports in JSON (best of 5) and prints the plan of
the heaviest query (top devices for a month).
"""

from __future__ import annotations

import io
import os
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from urllib.parse import urlparse

import django
import psycopg

YEAR_START = date(2026, 1, 1)
MODELS = [
    ("llama3.3-70b-instruct", "digitalocean", "free"),
    ("llama3-8b-instruct", "digitalocean", "free"),
    ("deepseek-r1-distill-llama-70b", "digitalocean", "free"),
    ("anthropic-claude-4-sonnet", "anthropic", "paid"),
    ("openai-gpt-5", "openai", "paid"),
    ("openai-gpt-4o", "openai", "paid"),
]


def _ensure_database(url: str) -> None:
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def _fill(rows: int) -> None:
    from django.db import connection

    from usage.models import UsageRecord

    if UsageRecord.objects.count() == rows:
        return
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord")
    rng = random.Random(2026)
    devices = [f"dev_{n:04d}" for n in range(500)]
    weights = [1 / (rank + 1) for rank in range(len(devices))]
    columns = (
        "request_id, device_id, owner, ip, model, provider, tier, tokens_in, tokens_out, "
        "cost_usd, is_estimated, status, is_streamed, duration_ms, budget_day, created_at"
    )
    started = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(f"COPY usage_usagerecord ({columns}) FROM STDIN") as copy,
    ):
        device_choices = rng.choices(devices, weights, k=rows)
        for n in range(rows):
            day = YEAR_START + timedelta(days=n * 365 // rows)
            model, provider, tier = rng.choice(MODELS)
            tokens_in, tokens_out = rng.randrange(20, 4000), rng.randrange(0, 1500)
            cost = Decimal(rng.randrange(1, 60_000)) / 1_000_000
            created = datetime.combine(day, day_time(12), tzinfo=UTC)
            copy.write_row(
                (
                    f"req_{n:09d}",
                    device_choices[n],
                    "",
                    "203.0.113.5",
                    model,
                    provider,
                    tier,
                    tokens_in,
                    tokens_out,
                    cost,
                    False,
                    "ok",
                    False,
                    500,
                    day,
                    created,
                )
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_usagerecord")
    print(f"inserted {rows} records in {time.perf_counter() - started:.1f}s")


def _best_of(runs: int, *args: str) -> float:
    from django.core.management import call_command

    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call_command("cost_report", *args, "--format", "json", stdout=io.StringIO())
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    _ensure_database(os.environ["DATABASE_URL"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from usage.models import UsageRecord

    call_command("migrate", verbosity=0)
    _fill(rows)
    print(f"{UsageRecord.objects.count()} records, {connection.vendor}")
    for args in (["--month", "2026-03"], ["--month", "2026-12"], ["--day", "2026-07-15"]):
        print(f"cost_report {' '.join(args)}: {_best_of(5, *args) * 1000:.0f} ms (best of 5)")
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN ANALYZE SELECT device_id, count(id), sum(tokens_in + tokens_out), "
            "sum(cost_usd) AS c FROM usage_usagerecord "
            "WHERE budget_day BETWEEN '2026-03-01' AND '2026-03-31' "
            "GROUP BY device_id ORDER BY c DESC, device_id LIMIT 10"
        )
        print("\n".join(row[0] for row in cursor.fetchall()))


if __name__ == "__main__":
    main()
