from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import yaml
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pytest_django import Settings

from billing import alerts
from billing.services import budget_pause
from devices.selectors import device_counts_by_status
from gateway import checks
from gateway.asgi import application
from gateway.core.metrics import REQUESTS, observe_request, render
from tests.conftest import TestClock
from tests.devices.conftest import fresh_store_clients
from tests.devices.support import Registered
from tests.fakes.slack import FakeSlack, fake_slack
from tests.support.processes import ROOT, PrivateRedis
from tests.usage.conftest import private_redis
from usage import limits

__all__ = ["fake_slack", "fresh_store_clients", "private_redis"]  # fixtures


def client(peer: str = "127.0.0.1") -> httpx.AsyncClient:
    # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
    transport = httpx.ASGITransport(app=application, client=(peer, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def test_metrics_are_served_to_an_allowed_peer_in_prometheus_format() -> None:
    REQUESTS.labels("chat", "m", "p", "200").inc()
    async with client() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'hanzo_requests_total{model="m",provider="p",route="chat",status="200"}' in response.text


@pytest.mark.parametrize("peer", ["10.1.2.3", "203.0.113.9"])
async def test_metrics_refuse_other_peers(peer: str) -> None:
    async with client(peer) as http:
        response = await http.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


async def test_metrics_refuse_anything_that_came_through_a_proxy() -> None:
    async with client() as http:
        response = await http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 403


# --- What the counters and gauges say ------------------------------------------


@pytest.fixture
async def thread_connections() -> AsyncIterator[None]:
    """Hands back the connections ORM calls opened in asgiref's worker thread."""
    yield
    await sync_to_async(connections.close_all)()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


SPEC_CODES = {
    "ip_blocked": "ip_guard",
    "request_too_large": "validation",
    "request_timeout": "validation",
    "invalid_credentials": "auth",
    "device_pending_approval": "auth",
    "device_rejected": "auth",
    "device_suspended": "auth",
    "invalid_request": "validation",
    "model_not_found": "route",
    "model_not_allowed": "route",
    "max_tokens_exceeded": "validation",
    "service_paused": "paused",
    "device_rate_limit_exceeded": "device",
    "ip_rate_limit_exceeded": "ip",
    "user_rate_limit_exceeded": "user",
    "burst_rate_limit_exceeded": "burst",
    "global_rate_limit_exceeded": "global",
    "device_budget_exceeded": "device_budget",
    "budget_exceeded": "budget",
    "upstream_timeout": "upstream",
    "upstream_error": "upstream",
    "upstream_overloaded": "upstream",
    "upstream_rejected": "upstream",
    "service_unavailable": "unavailable",
    "registration_rate_limit_exceeded": "registration",
    "not_found": "route",
    "method_not_allowed": "route",
}


@pytest.mark.parametrize(("code", "layer"), SPEC_CODES.items())
def test_every_refusal_code_of_spec_is_counted_under_its_layer(code: str, layer: str) -> None:
    before = sample("hanzo_refusals_total", layer=layer, code=code)
    fields: dict[str, Any] = {"code": code}
    observe_request("/v1/chat/completions", 429, fields, 0.01)
    assert sample("hanzo_refusals_total", layer=layer, code=code) == before + 1
    assert fields["layer"] == layer  # and the access line names it too


def test_the_limiters_own_layer_wins_and_other_paths_are_not_counted() -> None:
    before = sample("hanzo_refusals_total", layer="burst", code="x_limited")
    observe_request("/v1/chat/completions", 429, {"code": "x_limited", "layer": "burst"}, 0.01)
    observe_request("/metrics", 403, {"code": "x_limited", "layer": "burst"}, 0.01)
    assert sample("hanzo_refusals_total", layer="burst", code="x_limited") == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_refused_registration_is_counted_with_its_route_and_layer(
    client: Client, settings: Settings
) -> None:
    settings.REGISTRATIONS_PER_IP_PER_HOUR = 0
    labels = {"layer": "registration", "code": "registration_rate_limit_exceeded"}
    before = sample("hanzo_refusals_total", **labels)
    requests = {"route": "register", "model": "", "provider": "", "status": "429"}
    answered = sample("hanzo_requests_total", **requests)
    body = {"deviceName": "a", "platform": "b", "version": "c"}
    response = client.post("/v1/devices/register", body, content_type="application/json")
    assert response.status_code == 429
    assert sample("hanzo_refusals_total", **labels) == before + 1
    assert sample("hanzo_requests_total", **requests) == answered + 1


@pytest.mark.django_db(transaction=True)
def test_alert_sends_and_failures_are_counted_by_kind_and_outcome(fake_slack: FakeSlack) -> None:
    sent = sample("hanzo_alerts_total", kind="new_device", outcome="sent")
    failed = sample("hanzo_alerts_total", kind="suspicious_device", outcome="failed")
    alerts.alert_new_device(device_id="dev_1", name="a", platform="b", ip="192.0.2.1")
    assert alerts.drain()
    fake_slack.fail_with_status(500)
    alerts.alert_suspicious_device(device_id="dev_1", name="a", reason="many IPs")
    assert alerts.drain()
    assert sample("hanzo_alerts_total", kind="new_device", outcome="sent") == sent + 1
    assert sample("hanzo_alerts_total", kind="suspicious_device", outcome="failed") == failed + 1


@pytest.mark.django_db(transaction=True)
async def test_budget_pause_and_device_gauges_describe_the_shared_state(
    make_device: Callable[..., Registered],
    settings: Settings,
    fresh_store_clients: None,
    thread_connections: None,
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("2")
    await sync_to_async(make_device)("approved")
    await sync_to_async(make_device)("suspended")
    await sync_to_async(make_device)()
    admission = await limits.admit(
        limits.AdmissionRequest("req_gauge", "dev_gauge", "203.0.113.7", None, "free", 250_000)
    )
    assert admission.reservation is not None
    metrics = scraped((await render()).decode())
    assert metrics[("hanzo_budget_usd", frozenset())] == 2
    assert metrics[("hanzo_budget_reserved_usd", frozenset())] == 0.25
    assert metrics[("hanzo_budget_remaining_usd", frozenset())] == 1.75
    assert metrics[("hanzo_service_paused", frozenset())] == 0
    devices = {k[1]: v for k, v in metrics.items() if k[0] == "hanzo_devices"}
    assert devices[frozenset({("status", "approved")})] == 1
    assert devices[frozenset({("status", "suspended")})] == 1
    assert devices[frozenset({("status", "pending_approval")})] == 1

    await limits.settle(admission.reservation, actual_micro_usd=100_000)
    await sync_to_async(budget_pause)(reason="maintenance", actor="ops")
    metrics = scraped((await render()).decode())
    assert metrics[("hanzo_budget_spent_usd", frozenset())] == 0.1
    assert metrics[("hanzo_budget_reserved_usd", frozenset())] == 0
    assert metrics[("hanzo_service_paused", frozenset())] == 1
    assert metrics[("hanzo_service_auto_paused", frozenset())] == 0


@pytest.mark.django_db(transaction=True)
def test_an_expired_suspension_counts_as_approved(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    make_device("suspended")  # two hours
    assert device_counts_by_status() == {"suspended": 1}
    clock.advance(3 * 3600)
    assert device_counts_by_status() == {"approved": 1}


@pytest.mark.django_db(transaction=True)
async def test_the_scrape_still_answers_when_redis_is_down_and_says_so(
    private_redis: PrivateRedis, fresh_store_clients: None, thread_connections: None
) -> None:
    private_redis.stop()
    metrics = scraped((await render()).decode())
    assert metrics[("hanzo_store_up", frozenset())] == 0
    assert ("hanzo_budget_spent_usd", frozenset()) not in metrics
    assert metrics[("hanzo_database_up", frozenset())] == 1


def test_several_workers_without_a_metrics_directory_are_a_deploy_warning(
    settings: Settings,
) -> None:
    settings.WEB_CONCURRENCY = 2
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    assert [w.id for w in checks.metrics_of_one_worker_only()] == ["hanzo.W004"]
    settings.PROMETHEUS_MULTIPROC_DIR = "/tmp/metrics"
    assert checks.metrics_of_one_worker_only() == []


@pytest.mark.django_db(transaction=True)
async def test_the_alert_rules_and_the_readme_name_only_metrics_that_exist(
    fresh_store_clients: None, thread_connections: None
) -> None:
    text = (await render()).decode()
    families = {
        family.name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("hanzo_") and not family.name.endswith("_created")
    }
    assert {"hanzo_requests", "hanzo_budget_spent_usd", "hanzo_devices"} <= families
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    expressions = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    referenced = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for name in re.findall(r"\bhanzo_\w+", expressions)
    }
    assert referenced and referenced <= families
    readme = (ROOT / "README.md").read_text()
    assert [name for name in sorted(families) if name not in readme] == []
