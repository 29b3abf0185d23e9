"""The HTTP face of an admission: errors of SPEC's table and X-RateLimit headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.usage.conftest import FrozenClock
from usage import limits
from usage.backends.base import Backend
from usage.http import iso8601, rate_limit_headers, refusal_error
from usage.limits import Admission, AdmissionRequest, Layer
from usage.types import LayerName, Refusal

RESET = 1_800_086_400.0  # 2027-01-16T08:00:00Z


def admission(refused_by: Refusal | None = None, retry_after: int | None = None) -> Admission:
    layers: dict[LayerName, Layer] = {
        "device": Layer("device", 100, 0 if refused_by == "device" else 41, RESET),
        "ip": Layer("ip", 500, 0 if refused_by == "ip" else 300, RESET + 60),
        "user": Layer("user", 1000, 0, RESET),
        "burst": Layer("burst", 5, 0, 1_800_000_030.4),
        "global": Layer("global", 10000, 0, RESET),
    }
    return Admission(refused_by is None, refused_by, False, layers, None, retry_after)


def test_reset_times_are_iso_8601_in_utc_rounded_up_to_the_second() -> None:
    assert iso8601(RESET) == "2027-01-16T08:00:00Z"
    assert iso8601(RESET + 0.2) == "2027-01-16T08:00:01Z"


def test_an_admitted_response_carries_the_device_and_ip_headers() -> None:
    assert rate_limit_headers(admission()) == {
        "X-RateLimit-Limit-Device": "100",
        "X-RateLimit-Remaining-Device": "41",
        "X-RateLimit-Reset-Device": "2027-01-16T08:00:00Z",
        "X-RateLimit-Limit-IP": "500",
        "X-RateLimit-Remaining-IP": "300",
    }


@pytest.mark.parametrize(
    ("layer", "code", "window", "reset"),
    [
        ("device", "device_rate_limit_exceeded", "24 hours", "2027-01-16T08:00:00Z"),
        ("ip", "ip_rate_limit_exceeded", "24 hours", "2027-01-16T08:01:00Z"),
        ("user", "user_rate_limit_exceeded", "24 hours", "2027-01-16T08:00:00Z"),
        ("burst", "burst_rate_limit_exceeded", "1 minute", "2027-01-15T08:00:31Z"),
        ("global", "global_rate_limit_exceeded", "24 hours", "2027-01-16T08:00:00Z"),
    ],
)
def test_a_layer_refusal_is_a_429_naming_its_limit_window_and_reset(
    layer: LayerName, code: str, window: str, reset: str
) -> None:
    error = refusal_error(admission(layer, retry_after=77))
    assert error.status == 429
    body = error.payload()["error"]
    assert body["type"] == "rate_limit_error"
    assert body["code"] == code
    assert body["limit"] == admission().layers[layer].limit
    assert (body["window"], body["resetAt"]) == (window, reset)
    assert error.headers()["Retry-After"] == "77"
    assert error.headers()["X-RateLimit-Limit-Device"] == "100"


@pytest.mark.parametrize(
    ("refused_by", "status", "code", "error_type"),
    [
        ("paused", 503, "service_paused", "service_unavailable_error"),
        ("budget", 503, "budget_exceeded", "service_unavailable_error"),
        ("device_budget", 429, "device_budget_exceeded", "rate_limit_error"),
    ],
)
def test_pause_and_budget_refusals_carry_their_code_and_retry_after(
    refused_by: Refusal, status: int, code: str, error_type: str
) -> None:
    error = refusal_error(admission(refused_by, retry_after=3600))
    body = error.payload()["error"]
    assert (error.status, body["code"], body["type"]) == (status, code, error_type)
    assert body["message"]
    assert error.headers()["Retry-After"] == "3600"


def test_an_admitted_request_has_no_refusal() -> None:
    with pytest.raises(ValueError):
        refusal_error(admission())


@pytest.mark.django_db
async def test_a_real_refusal_renders_with_the_seconds_until_a_slot_frees(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limits_config(device=1)
    first = await limits.admit(AdmissionRequest("h-1", "dev-1", "203.0.113.7", None, "free", 0))
    second = await limits.admit(AdmissionRequest("h-2", "dev-1", "203.0.113.7", None, "free", 0))
    headers = rate_limit_headers(first)
    assert (headers["X-RateLimit-Remaining-Device"], headers["X-RateLimit-Remaining-IP"]) == (
        "0",
        "499",
    )
    error = refusal_error(second)
    # 24 hours and one 12-minute bucket: the request was at the start of its bucket.
    assert error.headers()["Retry-After"] == str(86400 + 720)
    assert error.payload()["error"]["resetAt"] == "2027-01-16T08:12:00Z"
