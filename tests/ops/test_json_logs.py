"""LOG_FORMAT=json on a running gateway: one JSON object per request, and no secret in any line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import wait_for

REGISTRATION = {"deviceName": "Ada's laptop", "platform": "macos", "version": "1.4.2"}


def access_lines(text: str) -> dict[str, dict[str, Any]]:
    """The access line of each request id (asserting there is exactly one each)."""
    lines: dict[str, dict[str, Any]] = {}
    for raw in text.splitlines():
        entry = json.loads(raw)  # every line is one JSON object
        if entry["logger"] == "gateway.access":
            assert entry["request_id"] not in lines, entry
            lines[entry["request_id"]] = entry
    return lines


def test_each_request_is_one_json_line_with_its_figures_and_no_secret(
    start_gateway: Callable[..., Gateway],
    make_device: Callable[..., Registered],
    provider: FakeProvider,
) -> None:
    gateway = start_gateway(LOG_FORMAT="json")
    server = gateway.servers[0]
    skip = len(server.log_text())  # the server may be shared with earlier tests
    paid = make_device("approved", tier="paid").token

    ok = gateway.chat(paid, messages=[{"role": "user", "content": "Hi [[tokens:3]]"}])
    unknown = gateway.chat(paid, model="no-such-model")
    failing = gateway.chat(paid, messages=[{"role": "user", "content": "[[fault:http_500]]"}])
    registered = httpx.post(f"{gateway.url}/v1/devices/register", json=REGISTRATION)
    stats = httpx.get(f"{gateway.url}/v1/usage/stats", headers={"Authorization": f"Bearer {paid}"})
    assert [r.status_code for r in (ok, unknown, failing, registered, stats)] == [
        200,
        404,
        502,
        201,
        200,
    ]
    ok_record, failed_record = ledger(2)
    ids = [r.headers["x-request-id"] for r in (ok, unknown, failing, registered, stats)]

    def logged() -> bool:
        return all(f'"{request_id}"' in server.log_text()[skip:] for request_id in ids)

    wait_for(logged, timeout=10, what="the access lines")
    access_lines(server.log_text())  # every line the server wrote is JSON
    text = server.log_text()[skip:]
    lines = access_lines(text)

    line = lines[ids[0]]
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["status"] == 200
    assert line["device_id"] == ok_record.device_id
    assert (line["model"], line["provider"]) == ("llama3-8b-instruct", "digitalocean")
    assert (line["tokens_in"], line["tokens_out"]) == (ok_record.tokens_in, 3)
    assert line["cost_usd"] == ok.headers["x-request-cost-usd"] == f"{ok_record.cost_usd:.6f}"
    assert 0 <= line["upstream_ms"] <= line["duration_ms"]
    assert line["client_ip"] == "127.0.0.1"

    line = lines[ids[1]]
    assert (line["status"], line["code"], line["layer"]) == (404, "model_not_found", "route")
    assert "model" not in line  # no route was resolved

    line = lines[ids[2]]
    assert (line["status"], line["code"]) == (502, "upstream_error")
    assert line["cost_usd"] == f"{failed_record.cost_usd:.6f}"
    assert "upstream_ms" in line and line["model"] == "llama3-8b-instruct"

    assert (lines[ids[3]]["path"], lines[ids[3]]["status"]) == ("/v1/devices/register", 201)
    assert lines[ids[4]]["device_id"] == ok_record.device_id

    secrets = [paid, registered.json()["sessionToken"], *provider.keys.values()]
    for secret in secrets:
        assert secret not in text
        assert secret[4:] not in text  # not even without its prefix
