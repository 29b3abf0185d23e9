"""/metrics of running gateways: exact counts after known traffic, across worker processes.

Two gateway processes (one on the embedded profile, whose in-process store
serves a single worker) share one PROMETHEUS_MULTIPROC_DIR, as gunicorn's
workers do; a scrape of either reports the sum of both. The scraper talks
from 127.0.0.2, the only address in METRICS_ALLOWED_IPS, so the test can
also be an address outside it (127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import IS_PRODUCTION
from tests.devices.support import Registered
from tests.proxy.conftest import Gateway, ledger
from usage.models import UsageRecord

SCRAPER = "127.0.0.2"
MODEL = "llama3-8b-instruct"


def scrape(url: str, *, source: str = SCRAPER, **headers: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"{url}/metrics", headers=headers)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metered(
    start_gateway: Callable[..., Gateway], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Gateway]:
    count = getattr(request, "param", 2 if IS_PRODUCTION else 1)
    gateway = start_gateway(
        count,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        METRICS_ALLOWED_IPS=SCRAPER,
        RATE_LIMIT_FREE_DEVICE_PER_DAY="1",
    )
    yield gateway
    for server in gateway.servers:  # private to this test: do not keep them for the session
        server.stop()


def test_a_scrape_of_any_worker_counts_every_workers_requests_exactly(
    metered: Gateway, make_device: Callable[..., Registered]
) -> None:
    servers = len(metered.servers)
    paid = make_device("approved", tier="paid").token
    free = make_device("approved").token
    make_device("pending_approval")

    statuses = [metered.chat(paid, server=n % servers).status_code for n in range(6)]
    statuses.append(metered.chat(free, server=1 % servers).status_code)
    statuses.append(metered.chat(free, server=0).status_code)  # free device: 1 a day
    for n in range(3):
        statuses.append(metered.chat(paid, server=n % servers, model="no-such-model").status_code)
    for n in range(2):
        failing = [{"role": "user", "content": "[[fault:http_500]]"}]
        statuses.append(metered.chat(paid, server=n % servers, messages=failing).status_code)
    statuses.append(metered.chat("hzt_" + "x" * 43, server=1 % servers).status_code)
    assert statuses == [200] * 7 + [429] + [404] * 3 + [502] * 2 + [401]
    records = ledger(9)

    scrapes = [samples(scrape(server.url).text) for server in metered.servers]
    counters = [
        {key: number for key, number in scrape.items() if not key[0].startswith("hanzo_budget")}
        for scrape in scrapes
    ]
    assert all(c == counters[0] for c in counters)  # every worker answers with the same sum
    metrics = scrapes[0]

    def requests(status: str, model: str = MODEL, provider: str = "digitalocean") -> float:
        return value(
            metrics,
            "hanzo_requests_total",
            route="chat_completions",
            model=model,
            provider=provider,
            status=status,
        )

    assert requests("200") == 7
    assert requests("429") == 1
    assert requests("502") == 2
    assert requests("404", model="", provider="") == 3
    assert requests("401", model="", provider="") == 1

    def refusals(layer: str, code: str) -> float:
        return value(metrics, "hanzo_refusals_total", layer=layer, code=code)

    assert refusals("route", "model_not_found") == 3
    assert refusals("upstream", "upstream_error") == 2
    assert refusals("device", "device_rate_limit_exceeded") == 1
    assert refusals("auth", "invalid_credentials") == 1
    refused = sum(n for (name, _), n in metrics.items() if name == "hanzo_refusals_total")
    assert refused == 7

    assert value(metrics, "hanzo_upstream_latency_seconds_count", provider="digitalocean") == 9
    overhead = value(metrics, "hanzo_gateway_overhead_seconds_count", route="chat_completions")
    assert overhead == 9

    tokens_in = sum(record.tokens_in for record in records)
    tokens_out = sum(record.tokens_out for record in records)
    assert tokens_in > 0 and tokens_out > 0
    assert value(metrics, "hanzo_tokens_total", model=MODEL, direction="input") == tokens_in
    assert value(metrics, "hanzo_tokens_total", model=MODEL, direction="output") == tokens_out
    spent = sum((record.cost_usd for record in records), Decimal(0))
    assert spent > 0
    assert value(metrics, "hanzo_cost_usd_total", model=MODEL) == pytest.approx(
        float(spent), abs=1e-9
    )

    # Shared state, computed when scraped.
    assert value(metrics, "hanzo_budget_spent_usd") == pytest.approx(float(spent), abs=1e-9)
    assert value(metrics, "hanzo_budget_reserved_usd") == 0
    assert value(metrics, "hanzo_budget_remaining_usd") == pytest.approx(50 - float(spent))
    assert value(metrics, "hanzo_service_paused") == 0
    assert value(metrics, "hanzo_store_up") == 1
    assert value(metrics, "hanzo_devices", status="approved") == 2
    assert value(metrics, "hanzo_devices", status="pending_approval") == 1
    assert value(metrics, "hanzo_devices", status="revoked") == 0
    assert UsageRecord.objects.filter(status="upstream_error").count() == 2


@pytest.mark.parametrize("metered", [1], indirect=True)
def test_metrics_refuse_a_peer_outside_the_allowed_ips_and_anything_forwarded(
    metered: Gateway,
) -> None:
    url = metered.url
    assert scrape(url).status_code == 200
    outside = scrape(url, source="127.0.0.1")
    assert outside.status_code == 403
    assert outside.json()["error"]["type"] == "permission_error"
    assert "hanzo_requests" not in outside.text
    forwarded = scrape(url, **{"X-Forwarded-For": SCRAPER})
    assert forwarded.status_code == 403
    assert scrape(url, **{"X-Real-IP": SCRAPER}).status_code == 403
