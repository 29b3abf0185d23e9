from __future__ import annotations

from collections.abc import Callable

import httpx

from devices.models import Device
from tests.devices.support import Registered
from tests.proxy.conftest import Gateway
from tests.support.processes import wait_for


def test_a_device_used_from_one_ip_too_many_is_suspended_on_its_next_request(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    gateway = start_gateway(SUSPICIOUS_IPS_PER_DEVICE_PER_DAY="2", TRUSTED_PROXIES="127.0.0.1/32")
    registered = make_device("approved")

    def stats(ip: str) -> httpx.Response:
        return httpx.get(
            f"{gateway.url}/v1/usage/stats",
            headers={"Authorization": f"Bearer {registered.token}", "X-Forwarded-For": ip},
            timeout=30,
        )

    assert stats("198.51.100.1").status_code == 200
    assert stats("198.51.100.2").status_code == 200
    assert stats("198.51.100.1").status_code == 200  # the same two: at the threshold
    assert Device.objects.get(pk=registered.id).status == "approved"
    assert stats("198.51.100.3").status_code == 200  # the check runs beside the request

    def suspended() -> bool:
        return Device.objects.get(pk=registered.id).status == "suspended"

    wait_for(suspended, timeout=10, what="the device to be suspended")
    refused = stats("198.51.100.1")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "device_suspended"
    assert refused.json()["error"]["reason"].startswith("used from more than 2 client IPs")
