"""``rotate_key`` against a real local Secrets Manager, seen by every running gateway process."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import gateway_environment
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import local_aws, manage_py

OLD_KEY = "sk-fake-openai-rotation-old-0123456789"
NEW_KEY = "sk-fake-openai-rotation-new-9876543210"
AWS = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with local_aws() as url:
        yield url


@pytest.fixture
def secrets(moto_url: str) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def rotate_key(provider: str, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return manage_py("rotate_key", provider, env=gateway_environment(**env), stdin=stdin)


def sent_keys(provider: FakeProvider) -> list[str]:
    return [
        r.headers["authorization"].removeprefix("Bearer ") for r in provider.requests_for("openai")
    ]


@pytest.mark.parametrize("count", [1, 2], ids=["one-process", "two-processes"])
def test_after_rotate_key_every_gateway_process_sends_the_new_key_on_its_next_request(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    secrets: Any,
    moto_url: str,
    paid_token: str,
    count: int,
) -> None:
    secrets.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    provider.keys["openai"] = OLD_KEY
    env = {"SECRETS_BACKEND": "aws", "AWS_ENDPOINT_URL": moto_url, **AWS}
    # The environment's key is not the one: keys come from Secrets Manager.
    gateway = start_gateway(count=count, OPENAI_API_KEY="sk-fake-openai-not-this-one", **env)
    for server in range(count):
        reply = gateway.chat(paid_token, server=server, model="openai-gpt-4o")
        assert reply.status_code == 200, reply.text
    assert sent_keys(provider) == [OLD_KEY] * count

    provider.keys["openai"] = NEW_KEY  # the provider now refuses the old key
    done = rotate_key("openai", NEW_KEY + "\n", env)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "openai" in output
    assert OLD_KEY not in output and NEW_KEY not in output

    for server in range(count):
        reply = gateway.chat(paid_token, server=server, model="openai-gpt-4o")
        assert reply.status_code == 200, reply.text
    # Each process sent the new key at once: no refused attempt, no retry.
    assert sent_keys(provider) == [OLD_KEY] * count + [NEW_KEY] * count
    stored = secrets.get_secret_value(SecretId="hanzo-gateway/openai/api-key")
    assert stored["SecretString"] == NEW_KEY
    assert len(ledger(2 * count)) == 2 * count
    logs = gateway.logs()
    assert OLD_KEY not in logs and NEW_KEY not in logs
