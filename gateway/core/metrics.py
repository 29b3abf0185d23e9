"""Prometheus metrics (prometheus-client), one truth across worker processes.

Counters and histograms are recorded by whichever worker served the request.
With several workers (gunicorn, or several uvicorn processes on one host)
set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them: the
client then keeps values in memory-mapped files there and ``/metrics``
merges every worker's files, so any worker answers with the sum. Gauges
that describe shared state (budget, pause, devices by status) are not
recorded per worker but computed when scraped, by the providers registered
with ``add_scrape_source``.

``/metrics`` answers only socket peers inside ``METRICS_ALLOWED_IPS`` and
never a request that came through a proxy (it carries ``X-Forwarded-For``,
``X-Real-IP`` or ``Forwarded``, whatever ``CLIENT_IP_HEADER`` says): nginx
denies the path too.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from django.conf import settings
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.core.money import usd_float

logger = logging.getLogger(__name__)

# prometheus-client reads PROMETHEUS_MULTIPROC_DIR from the environment when
# it is imported (settings mirror it for the system checks). The directory
# must exist before the first value is recorded; gunicorn.conf.py empties it
# when the server starts, so counters of a previous run are not summed in.
_MULTIPROCESS = bool(settings.PROMETHEUS_MULTIPROC_DIR)
if _MULTIPROCESS:
    os.makedirs(settings.PROMETHEUS_MULTIPROC_DIR, exist_ok=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

REQUESTS = Counter(
    "hanzo_requests",
    "Requests answered on /v1, by route, model, provider and HTTP status.",
    ["route", "model", "provider", "status"],
)
UPSTREAM_LATENCY = Histogram(
    "hanzo_upstream_latency_seconds",
    "Time from sending to a provider until its answer completed.",
    ["provider"],
    buckets=LATENCY_BUCKETS,
)
GATEWAY_OVERHEAD = Histogram(
    "hanzo_gateway_overhead_seconds",
    "Time the gateway itself added to a proxied request (total minus upstream).",
    ["route"],
    buckets=OVERHEAD_BUCKETS,
)
TOKENS = Counter("hanzo_tokens", "Tokens billed, by model and direction.", ["model", "direction"])
COST = Counter("hanzo_cost_usd", "Cost billed in USD, by model.", ["model"])
REFUSALS = Counter(
    "hanzo_refusals", "Requests refused, by layer and error code.", ["layer", "code"]
)
ALERTS = Counter("hanzo_alerts", "Alerts sent to Slack, by kind and outcome.", ["kind", "outcome"])
# Circuit breakers (usage.breakers). Labels name routes and providers, never a key.
BREAKER_ATTEMPTS = Counter(
    "hanzo_breaker_attempts",
    "Upstream attempts per route, by outcome: ok, failure, timeout, rejected (the client's 4xx).",
    ["route", "outcome"],
)
BREAKER_TRANSITIONS = Counter(
    "hanzo_breaker_transitions",
    "Circuit breakers opened or closed, once across processes: by route, or a key's provider.",
    ["kind", "name", "transition"],
)


def _labelled(metric: Any) -> Callable[..., Any]:
    """``metric.labels``, remembered for the metrics counted on every request.

    ``labels`` converts its values and takes a lock on each call, about a
    microsecond, several times a request; the child it returns for given
    values stays the same (nothing here removes one), so it can be kept.
    """
    return functools.cache(metric.labels)


_requests = _labelled(REQUESTS)
_upstream_latency = _labelled(UPSTREAM_LATENCY)
_gateway_overhead = _labelled(GATEWAY_OVERHEAD)
_tokens = _labelled(TOKENS)
_cost = _labelled(COST)
_breaker_attempts = _labelled(BREAKER_ATTEMPTS)

ScrapeSource = Callable[[], Awaitable[Iterable[GaugeMetricFamily]]]
_scrape_sources: list[ScrapeSource] = []


def add_scrape_source(source: ScrapeSource) -> ScrapeSource:
    """Register an async function returning gauge families computed at scrape time."""
    _scrape_sources.append(source)
    return source


ROUTE_NAMES = {
    "/v1/chat/completions": "chat_completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/devices/register": "register",
    "/v1/devices/me": "device",
    "/v1/usage/stats": "usage_stats",
}

# The stage of SPEC's check order that answers each error code. The
# limiter's own refusals carry their layer in the request's log fields
# (``refused_by``: device, ip, user, burst, global, device_budget, budget,
# paused); the same names are used here when a refusal arrives without it.
LAYER_BY_CODE = {
    "ip_blocked": "ip_guard",
    "request_too_large": "validation",
    "request_timeout": "validation",
    "invalid_request": "validation",
    "max_tokens_exceeded": "validation",
    "invalid_credentials": "auth",
    "not_authenticated": "auth",
    "permission_denied": "auth",
    "device_pending_approval": "auth",
    "device_rejected": "auth",
    "device_suspended": "auth",
    "model_not_found": "route",
    "model_not_allowed": "route",
    "not_found": "route",
    "method_not_allowed": "route",
    "service_paused": "paused",
    "device_rate_limit_exceeded": "device",
    "ip_rate_limit_exceeded": "ip",
    "user_rate_limit_exceeded": "user",
    "burst_rate_limit_exceeded": "burst",
    "global_rate_limit_exceeded": "global",
    "concurrency_limit_exceeded": "concurrency",
    "device_budget_exceeded": "device_budget",
    "budget_exceeded": "budget",
    "registration_rate_limit_exceeded": "registration",
    "upstream_timeout": "upstream",
    "upstream_error": "upstream",
    "upstream_overloaded": "upstream",
    "upstream_rejected": "upstream",
    "service_unavailable": "unavailable",  # Redis or the database did not answer
    "internal_error": "internal",
}


def observe_request(path: str, status: int, fields: dict[str, Any], duration: float) -> None:
    """Count one answered /v1 request (the lean layer and Django's middleware call it).

    An error's layer is written into ``fields`` (for the access line) when
    the caller did not know it. Other paths (``/metrics`` itself, probes,
    the admin) are not counted.
    """
    code = fields.get("code")
    if status >= 400 and code and not fields.get("layer"):
        fields["layer"] = layer_of(code, status)
    if not path.startswith("/v1/"):
        return
    route = ROUTE_NAMES.get(path, "other")
    model = fields.get("model") or ""
    _requests(route, model, fields.get("provider") or "", str(status)).inc()
    if status >= 400 and code:
        REFUSALS.labels(fields["layer"], code).inc()
    upstream_ms = fields.get("upstream_ms")
    if upstream_ms is not None:
        _upstream_latency(fields.get("provider") or "").observe(upstream_ms / 1000)
        if not fields.get("is_streamed"):
            _gateway_overhead(route).observe(max(0.0, duration - upstream_ms / 1000))


def count_usage(model: str, tokens_in: int, tokens_out: int, cost_micro_usd: int) -> None:
    """Count what one settled request billed."""
    _tokens(model, "input").inc(tokens_in)
    _tokens(model, "output").inc(tokens_out)
    _cost(model).inc(usd_float(cost_micro_usd))


def count_attempt(route: str, outcome: str) -> None:
    """Count one upstream attempt of a route (the circuit breakers' reports)."""
    _breaker_attempts(route, outcome).inc()


def layer_of(code: str, status: int) -> str:
    """Which stage said no, for an error ``code`` answered with ``status``."""
    layer = LAYER_BY_CODE.get(code)
    if layer is not None:
        return layer
    stages = {400: "validation", 401: "auth", 403: "auth", 404: "route", 413: "validation"}
    return stages.get(status, "other")


def gauge(
    name: str, documentation: str, value: float, labels: dict[str, str] | None = None
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class _Snapshot:
    """A collector over families computed before the scrape (collect() must be sync)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return self.families


async def render() -> bytes:
    registry = CollectorRegistry()
    if _MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    families: list[GaugeMetricFamily] = []
    for source in _scrape_sources:
        try:
            families.extend(await source())
        except Exception:
            # A broken gauge must not cost the counters their scrape.
            logger.exception("metrics source %s failed", getattr(source, "__name__", source))
    if not families:
        return generate_latest(registry)
    snapshot = _Snapshot(families)
    registry.register(snapshot)
    try:
        return generate_latest(registry)
    finally:
        registry.unregister(snapshot)
