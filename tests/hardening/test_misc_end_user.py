"""A client cannot choose the end-user id a provider attributes abuse to.

OpenAI's ``user`` and Anthropic's ``metadata.user_id`` tell the provider who
sent a request, and it acts on abuse per id. The gateway sends its own
opaque id for the calling device instead of the client's: the same for every
request of a device, different between devices, and revealing neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from devices.tokens import token_hash
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider, RecordedRequest
from tests.proxy.conftest import Gateway

CHOSEN = "victim@example.com"


def end_user_of(request: RecordedRequest) -> str:
    end_user: str = (
        request.body["metadata"]["user_id"]
        if request.provider == "anthropic"
        else request.body["user"]
    )
    return end_user


def test_the_provider_gets_an_opaque_id_per_device_never_the_clients_user(
    gateway: Gateway, make_device: Callable[..., Registered], provider: FakeProvider
) -> None:
    alice = make_device("approved", tier="paid", name="alice")
    bob = make_device("approved", tier="paid", name="bob")
    calls: list[tuple[Registered, str, dict[str, Any]]] = [
        (alice, "openai-gpt-4o", {"user": CHOSEN}),
        (alice, "llama3-8b-instruct", {}),
        (alice, "anthropic-claude-4-sonnet", {"user": CHOSEN}),
        (bob, "openai-gpt-4o", {"user": CHOSEN}),
        (bob, "anthropic-claude-4-sonnet", {"stream": True}),
    ]
    for device, model, fields in calls:
        response = gateway.chat(device.token, model=model, **fields)
        assert response.status_code == 200, response.text
    received = provider.requests
    assert [request.provider for request in received] == [
        "openai",
        "digitalocean",
        "anthropic",
        "openai",
        "anthropic",
    ]
    assert CHOSEN not in json.dumps([request.body for request in received])
    ids = [end_user_of(request) for request in received]
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] == ids[4] != ids[0]
    for device, end_user in ((alice, ids[0]), (bob, ids[3])):
        assert len(end_user) >= 16
        for secret in (device.id, device.id[4:], device.token[4:], token_hash(device.token)):
            assert secret not in end_user and end_user not in secret
