"""Provider keys: env and AWS Secrets Manager backends (a real local one), caching, rotation."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import time
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from pytest_django import Settings

from gateway.core import secrets_aws
from gateway.core.logs import RedactingFormatter
from gateway.core.store import read_versions
from gateway.proxy import keys
from gateway.proxy.keys import ProviderKey, ProviderKeyUnavailable
from tests.conftest import TestClock
from tests.support.processes import free_port, manage_py

OLD_KEY = "old-openai-key-a1b2c3d4e5f6"
NEW_KEY = "new-openai-key-f6e5d4c3b2a1"


pytestmark = pytest.mark.usefixtures("fresh_key_cache")


async def current_epoch() -> int:
    return (await read_versions("-"))[1]


# --- env backend ----------------------------------------------------------------------


@pytest.fixture
def env_keys(settings: Settings) -> Settings:
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {
        "openai": OLD_KEY,
        "anthropic": "",
        "digitalocean": "do-key-123456789",
    }
    return settings


async def test_the_env_backend_gives_each_provider_its_key(env_keys: Settings) -> None:
    key = await keys.get_key("openai", epoch=0)
    assert key.reveal() == OLD_KEY
    assert key.provider == "openai"
    assert (await keys.get_key("digitalocean", epoch=0)).reveal() == "do-key-123456789"


async def test_a_provider_without_a_key_is_an_upstream_error(env_keys: Settings) -> None:
    with pytest.raises(ProviderKeyUnavailable) as caught:
        await keys.get_key("anthropic", epoch=0)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


async def test_a_key_is_cached_until_secret_cache_seconds_have_passed(
    env_keys: Settings, clock: TestClock
) -> None:
    env_keys.SECRET_CACHE_SECONDS = 300
    assert (await keys.get_key("openai", epoch=0)).reveal() == OLD_KEY
    env_keys.PROVIDER_ENV_KEYS = {**env_keys.PROVIDER_ENV_KEYS, "openai": NEW_KEY}
    clock.advance(299)
    assert (await keys.get_key("openai", epoch=0)).reveal() == OLD_KEY
    clock.advance(2)
    assert (await keys.get_key("openai", epoch=0)).reveal() == NEW_KEY


async def test_a_new_epoch_drops_the_cached_key_at_once(env_keys: Settings) -> None:
    assert (await keys.get_key("openai", epoch=4)).reveal() == OLD_KEY
    env_keys.PROVIDER_ENV_KEYS = {**env_keys.PROVIDER_ENV_KEYS, "openai": NEW_KEY}
    assert (await keys.get_key("openai", epoch=4)).reveal() == OLD_KEY
    assert (await keys.get_key("openai", epoch=5)).reveal() == NEW_KEY


def test_a_key_never_prints_itself() -> None:
    key = ProviderKey("openai", OLD_KEY)
    for shown in (
        repr(key),
        str(key),
        f"{key}",
        f"{key!r}",
        f"{key}",
        repr([key]),
        repr({"k": key}),
    ):
        assert OLD_KEY not in shown
    assert "openai" in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


async def test_a_loaded_key_is_masked_in_every_log_line(env_keys: Settings) -> None:
    # This key has no vendor shape the log patterns know: only registration masks it.
    env_keys.PROVIDER_ENV_KEYS = {**env_keys.PROVIDER_ENV_KEYS, "openai": "plainvalue9876543210"}
    await keys.get_key("openai", epoch=0)
    record = logging.LogRecord(
        "gateway",
        logging.ERROR,
        __file__,
        1,
        "upstream said %s",
        ("bad plainvalue9876543210",),
        None,
    )
    line = RedactingFormatter("%(message)s").format(record)
    assert "plainvalue9876543210" not in line
    assert "[REDACTED]" in line


# --- aws backend against a local Secrets Manager -----------------------------------------


def rotate(provider: str, stdin: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_key", provider, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


async def test_the_aws_backend_reads_the_plain_secret_string(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    assert (await keys.get_key("openai", epoch=0)).reveal() == OLD_KEY


async def test_a_missing_secret_is_an_upstream_error(secrets_manager: Any) -> None:
    with pytest.raises(ProviderKeyUnavailable):
        await keys.get_key("anthropic", epoch=0)


async def test_a_provider_whose_secret_is_missing_counts_as_unconfigured_until_the_epoch_moves(
    secrets_manager: Any,
) -> None:
    assert keys.is_configured("anthropic", epoch=4)  # not asked yet
    with pytest.raises(ProviderKeyUnavailable):
        await keys.get_key("anthropic", epoch=4)
    assert not keys.is_configured("anthropic", epoch=4)
    assert keys.is_configured("openai", epoch=4)
    # rotate_key stores a key and bumps the epoch: the next request asks again.
    secrets_manager.create_secret(Name="hanzo-gateway/anthropic/api-key", SecretString=NEW_KEY)
    assert keys.is_configured("anthropic", epoch=5)
    assert (await keys.get_key("anthropic", epoch=5)).reveal() == NEW_KEY
    assert keys.is_configured("anthropic", epoch=5)


def test_the_env_backend_knows_its_providers_without_asking(env_keys: Settings) -> None:
    assert keys.is_configured("openai", epoch=0)
    assert not keys.is_configured("anthropic", epoch=0)  # an empty key is no key


async def test_rotate_key_stores_the_new_key_and_every_process_sees_it_next_request(
    secrets_manager: Any,
) -> None:
    secrets_manager.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    before = await current_epoch()
    assert (await keys.get_key("openai", epoch=before)).reveal() == OLD_KEY

    output = await asyncio.to_thread(rotate, "openai", NEW_KEY + "\n")

    assert "openai" in output and "hanzo-gateway/openai/api-key" in output
    assert NEW_KEY not in output and OLD_KEY not in output
    stored = secrets_manager.get_secret_value(SecretId="hanzo-gateway/openai/api-key")
    assert stored["SecretString"] == NEW_KEY
    after = await current_epoch()
    assert after > before
    assert (await keys.get_key("openai", epoch=after)).reveal() == NEW_KEY


def test_rotate_key_creates_the_secret_when_missing(secrets_manager: Any) -> None:
    rotate("digitalocean", "do-new-key-0123456789")
    stored = secrets_manager.get_secret_value(SecretId="hanzo-gateway/digitalocean/api-key")
    assert stored["SecretString"] == "do-new-key-0123456789"


@pytest.mark.parametrize(
    ("provider", "stdin", "reason"),
    [
        ("mistral", NEW_KEY, "unknown provider 'mistral'"),
        ("openai", "", "empty key"),
        ("openai", "  \n", "empty key"),
        ("openai", "two keys\n", "whitespace"),
    ],
)
def test_rotate_key_refuses_bad_input_in_one_line(
    secrets_manager: Any, provider: str, stdin: str, reason: str
) -> None:
    with pytest.raises(CommandError) as caught:
        rotate(provider, stdin)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rotate_key_refuses_the_env_backend_with_what_to_do(settings: Settings) -> None:
    settings.SECRETS_BACKEND = "env"
    with pytest.raises(CommandError) as caught:
        rotate("anthropic", NEW_KEY)
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert "restart" in str(caught.value)


def test_rotate_key_exits_non_zero_with_one_line_and_no_traceback() -> None:
    result = manage_py(
        "rotate_key", "openai", env={**os.environ, "SECRETS_BACKEND": "env"}, stdin=NEW_KEY
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" in result.stderr
    assert NEW_KEY not in result.stdout + result.stderr


async def test_the_last_good_key_serves_while_the_store_is_unreachable(
    secrets_manager: Any, settings: Settings, clock: TestClock
) -> None:
    secrets_manager.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    assert (await keys.get_key("openai", epoch=0)).reveal() == OLD_KEY
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    clock.advance(301)
    assert (await keys.get_key("openai", epoch=0)).reveal() == OLD_KEY
    # A rotation seen while the store is down also keeps the last good key.
    assert (await keys.get_key("openai", epoch=1)).reveal() == OLD_KEY
    settings.AWS_ENDPOINT_URL = secrets_manager.meta.endpoint_url
    secrets_manager.put_secret_value(SecretId="hanzo-gateway/openai/api-key", SecretString=NEW_KEY)
    clock.advance(keys.RETRY_AFTER_FAILURE_SECONDS + 1)
    assert (await keys.get_key("openai", epoch=1)).reveal() == NEW_KEY


async def test_without_a_last_good_key_an_unreachable_store_is_an_upstream_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.SECRETS_BACKEND = "aws"
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderKeyUnavailable):
        await keys.get_key("openai", epoch=0)


async def test_concurrent_requests_on_a_cold_cache_fetch_the_key_once(
    secrets_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_manager.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    calls: list[str] = []
    original = secrets_aws.get_secret

    def slow_counting_fetch(name: str) -> str:
        calls.append(name)
        time.sleep(0.1)  # long enough for every caller to pile up behind the lock
        return original(name)

    monkeypatch.setattr(secrets_aws, "get_secret", slow_counting_fetch)
    found = await asyncio.gather(*(keys.get_key("openai", epoch=0) for _ in range(50)))
    assert {key.reveal() for key in found} == {OLD_KEY}
    assert calls == ["hanzo-gateway/openai/api-key"]


async def test_a_refresh_after_a_refused_key_fetches_once_for_all_waiters(
    secrets_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_manager.create_secret(Name="hanzo-gateway/openai/api-key", SecretString=OLD_KEY)
    rejected = await keys.get_key("openai", epoch=0)
    secrets_manager.put_secret_value(SecretId="hanzo-gateway/openai/api-key", SecretString=NEW_KEY)
    calls: list[str] = []
    original = secrets_aws.get_secret

    def counting_fetch(name: str) -> str:
        calls.append(name)
        return original(name)

    monkeypatch.setattr(secrets_aws, "get_secret", counting_fetch)
    found = await asyncio.gather(*(keys.refresh("openai", rejected=rejected) for _ in range(20)))
    assert {key.reveal() for key in found} == {NEW_KEY}
    assert len(calls) == 1
