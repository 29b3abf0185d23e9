"""Key pools: several keys per provider, used in turn, benched on 429, refused on 401/403."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import subprocess
import sys
from typing import Any

import pytest
from pytest_django import Settings

from gateway.core import secrets_aws
from gateway.core.logs import RedactingFormatter
from gateway.proxy import keys
from gateway.proxy.keys import ProviderKey, ProviderKeyUnavailable
from tests.conftest import TestClock
from tests.support.processes import ROOT, base_environment, free_port

pytestmark = pytest.mark.usefixtures("fresh_key_cache")

A, B, C = "sk-pool-key-a-0123456789", "sk-pool-key-b-0123456789", "sk-pool-key-c-0123456789"
SECRET = "hanzo-gateway/openai/api-key"


def values(pool: list[ProviderKey] | tuple[ProviderKey, ...]) -> list[str]:
    return [key.reveal() for key in pool]


@pytest.fixture
def env_pool(settings: Settings) -> Settings:
    """The env backend with an openai pool of A, B, C (the single key, then the list)."""
    settings.SECRETS_BACKEND = "env"
    settings.SECRET_CACHE_SECONDS = 300
    settings.PROVIDER_ENV_KEYS = {"openai": A, "anthropic": "", "digitalocean": "do-key-0123456"}
    settings.PROVIDER_ENV_KEY_LISTS = {"openai": [B, C], "anthropic": [], "digitalocean": []}
    return settings


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the secrets fetched from Secrets Manager from now on."""
    calls: list[str] = []
    original = secrets_aws.get_secret

    def counting_fetch(name: str) -> str:
        calls.append(name)
        return original(name)

    monkeypatch.setattr(secrets_aws, "get_secret", counting_fetch)
    return calls


@pytest.fixture
def aws_pool(secrets_manager: Any) -> Any:
    """The aws backend whose openai secret holds the JSON list [A, B, C]."""
    secrets_manager.create_secret(Name=SECRET, SecretString=json.dumps([A, B, C]))
    return secrets_manager


# --- reading pools --------------------------------------------------------------------


async def test_the_env_pool_is_the_single_key_then_the_list_stripped_without_repeats_or_blanks(
    env_pool: Settings,
) -> None:
    env_pool.PROVIDER_ENV_KEYS = {**env_pool.PROVIDER_ENV_KEYS, "openai": f" {A} "}
    env_pool.PROVIDER_ENV_KEY_LISTS = {
        **env_pool.PROVIDER_ENV_KEY_LISTS,
        "openai": [f" {B}", A, "", "  ", f"{C} ", B],
    }
    pool = await keys.pool("openai", epoch=0)
    assert values(pool) == [A, B, C]
    assert {key.provider for key in pool} == {"openai"}


async def test_an_env_pool_may_come_from_the_list_alone(env_pool: Settings) -> None:
    env_pool.PROVIDER_ENV_KEY_LISTS = {**env_pool.PROVIDER_ENV_KEY_LISTS, "anthropic": [" ", C]}
    assert keys.is_configured("anthropic", epoch=0)
    assert values(await keys.pool("anthropic", epoch=0)) == [C]
    assert (await keys.get_key("anthropic", epoch=0)).reveal() == C


async def test_a_provider_with_neither_name_set_has_no_pool(env_pool: Settings) -> None:
    env_pool.PROVIDER_ENV_KEY_LISTS = {**env_pool.PROVIDER_ENV_KEY_LISTS, "anthropic": ["", " "]}
    assert not keys.is_configured("anthropic", epoch=0)
    with pytest.raises(ProviderKeyUnavailable):
        await keys.pool("anthropic", epoch=0)


def test_the_environment_names_reach_the_settings_as_lists() -> None:
    environment = base_environment()
    environment.update(
        OPENAI_API_KEY="sk-single-0123456789",
        OPENAI_API_KEYS=" sk-list-one-0123456789, ,sk-list-two-0123456789",
        DIGITALOCEAN_API_KEYS="dop-only-0123456789",
    )
    code = (
        "import django, json; django.setup(); from gateway.proxy import keys; "
        "print(json.dumps([list(keys.env_pool(p)) for p in keys.PROVIDERS]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["sk-single-0123456789", "sk-list-one-0123456789", "sk-list-two-0123456789"],
        [],
        ["dop-only-0123456789"],
    ]


async def test_the_aws_backend_reads_a_json_list_as_a_pool(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=json.dumps([f" {A}", B, A]))
    assert values(await keys.pool("openai", epoch=0)) == [A, B]


async def test_the_aws_backend_still_reads_one_plain_key(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=f"{A}\n")
    assert values(await keys.pool("openai", epoch=0)) == [A]


@pytest.mark.parametrize(
    "stored",
    [
        "[]",
        json.dumps([A, 3]),
        json.dumps([A, " "]),
        json.dumps({"openai": A}),
        json.dumps(A),
        f'["{A}", ',
    ],
    ids=["empty-list", "not-a-string", "blank-string", "object", "json-string", "broken"],
)
async def test_a_json_secret_that_is_not_a_list_of_keys_is_no_usable_key_and_never_logged(
    secrets_manager: Any, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=stored)
    with caplog.at_level(logging.WARNING), pytest.raises(ProviderKeyUnavailable):
        await keys.pool("openai", epoch=3)
    assert not keys.is_configured("openai", epoch=3)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "not a non-empty list of non-empty strings" in logged
    assert A not in logged and stored not in logged


async def test_an_unusable_secret_keeps_the_last_good_pool(
    aws_pool: Any, clock: TestClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert values(await keys.pool("openai", epoch=0)) == [A, B, C]
    aws_pool.put_secret_value(SecretId=SECRET, SecretString=json.dumps([]))
    clock.advance(301)
    with caplog.at_level(logging.WARNING):
        assert values(await keys.pool("openai", epoch=0)) == [A, B, C]
    assert "keeping the last good openai keys" in caplog.text


async def test_the_last_good_pool_serves_while_the_store_is_unreachable(
    aws_pool: Any, settings: Settings, clock: TestClock
) -> None:
    assert values(await keys.pool("openai", epoch=0)) == [A, B, C]
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    clock.advance(301)
    assert values(await keys.pool("openai", epoch=0)) == [A, B, C]
    assert values(await keys.pool("openai", epoch=1)) == [A, B, C]
    settings.AWS_ENDPOINT_URL = aws_pool.meta.endpoint_url
    aws_pool.put_secret_value(SecretId=SECRET, SecretString=json.dumps([C, A]))
    clock.advance(keys.RETRY_AFTER_FAILURE_SECONDS + 1)
    assert values(await keys.pool("openai", epoch=1)) == [C, A]


async def test_a_pool_is_cached_and_dropped_when_the_epoch_moves(
    aws_pool: Any, fetches: list[str], clock: TestClock
) -> None:
    await keys.pool("openai", epoch=0)
    aws_pool.put_secret_value(SecretId=SECRET, SecretString=json.dumps([B, C]))
    clock.advance(299)
    assert values(await keys.pool("openai", epoch=0)) == [A, B, C]
    assert values(await keys.pool("openai", epoch=1)) == [B, C]
    assert fetches == [SECRET, SECRET]


async def test_concurrent_requests_on_a_cold_cache_fetch_the_pool_once(
    aws_pool: Any, fetches: list[str]
) -> None:
    pools = await asyncio.gather(*(keys.pool("openai", epoch=0) for _ in range(30)))
    assert {tuple(values(pool)) for pool in pools} == {(A, B, C)}
    assert fetches == [SECRET]


async def test_every_key_of_a_pool_is_masked_in_log_lines(secrets_manager: Any) -> None:
    # No vendor shape the log patterns know, and never registered before: only
    # the registration of each loaded value can mask these.
    first, second = "poolmaskfirst9876543210", "poolmasksecond9876543210"
    secrets_manager.create_secret(Name=SECRET, SecretString=json.dumps([first, second]))
    await keys.pool("openai", epoch=0)
    record = logging.LogRecord(
        "gateway", logging.ERROR, __file__, 1, "upstream said %s %s", (first, second), None
    )
    line = RedactingFormatter("%(message)s").format(record)
    assert first not in line and second not in line
    assert line.count("[REDACTED]") == 2


# --- key ids --------------------------------------------------------------------------


def test_a_key_id_is_a_short_stable_keyed_fingerprint_never_the_key(settings: Settings) -> None:
    key_id = ProviderKey("openai", A).key_id
    assert re.fullmatch(r"[0-9a-f]{12}", key_id)
    assert ProviderKey("openai", A).key_id == key_id  # another object, another process
    assert ProviderKey("openai", B).key_id != key_id
    assert key_id not in A
    # Not a plain hash anyone could compute from a guessed or leaked key.
    for plain in (hashlib.sha256, hashlib.sha1, hashlib.md5):
        assert key_id not in plain(A.encode()).hexdigest()
    settings.SECRET_KEY = "another-deployment-secret-key-0123456789"
    assert ProviderKey("openai", A).key_id != key_id


def test_a_key_id_never_shows_in_how_a_key_prints() -> None:
    key = ProviderKey("openai", A)
    assert A not in repr(key) and A not in f"{key}"


# --- taking turns ---------------------------------------------------------------------


async def test_successive_requests_start_on_successive_keys(env_pool: Settings) -> None:
    pool = await keys.pool("openai", epoch=0)
    turns = [values(keys.in_turn("openai", pool)) for _ in range(4)]
    assert turns == [[A, B, C], [B, C, A], [C, A, B], [A, B, C]]


async def test_get_key_hands_out_the_pool_round_robin_per_provider(env_pool: Settings) -> None:
    openai_keys = [(await keys.get_key("openai", epoch=0)).reveal() for _ in range(4)]
    do_keys = [(await keys.get_key("digitalocean", epoch=0)).reveal() for _ in range(2)]
    assert openai_keys == [A, B, C, A]
    assert do_keys == ["do-key-0123456"] * 2


async def test_a_rate_limited_key_sits_out_its_retry_after_then_returns(
    env_pool: Settings, clock: TestClock
) -> None:
    pool = await keys.pool("openai", epoch=0)
    keys.bench(pool[1], 30)
    assert values(keys.in_turn("openai", pool)) == [A, C]
    assert values(keys.in_turn("openai", pool)) == [C, A]
    assert keys.soonest_free("openai") == pytest.approx(30, abs=0.5)
    clock.advance(29)
    assert B not in values(keys.in_turn("openai", pool))
    clock.advance(2)
    assert values(keys.in_turn("openai", pool)) == [A, B, C]
    assert keys.soonest_free("openai") is None


async def test_a_bench_outlives_a_pool_refresh_but_not_a_new_epoch(
    env_pool: Settings, clock: TestClock
) -> None:
    await keys.pool("openai", epoch=1)
    keys.bench(ProviderKey("openai", B), 400)
    clock.advance(301)  # the cache expired: the pool is fetched again
    pool = await keys.pool("openai", epoch=1)
    assert B not in values(keys.in_turn("openai", pool))
    # An operator changed keys or routes (rotate_key, the admin): every key is tried again.
    pool = await keys.pool("openai", epoch=2)
    assert B in values(keys.in_turn("openai", pool))


async def test_with_every_key_benched_no_key_is_in_turn_and_the_soonest_is_named(
    env_pool: Settings,
) -> None:
    pool = await keys.pool("openai", epoch=0)
    for key, seconds in zip(pool, (50, 20, 90), strict=True):
        keys.bench(key, seconds)
    assert keys.in_turn("openai", pool) == []
    assert keys.soonest_free("openai") == pytest.approx(20, abs=0.5)


@pytest.mark.parametrize("seconds", [0, -5, math.nan])
async def test_a_bench_of_no_time_is_ignored(env_pool: Settings, seconds: float) -> None:
    pool = await keys.pool("openai", epoch=0)
    keys.bench(pool[0], seconds)
    assert values(keys.in_turn("openai", pool)) == [A, B, C]
    assert keys.soonest_free("openai") is None


async def test_a_bench_is_capped_and_never_shortened(env_pool: Settings) -> None:
    pool = await keys.pool("openai", epoch=0)
    keys.bench(pool[0], 10**9)
    assert keys.soonest_free("openai") == pytest.approx(keys.MAX_BENCH_SECONDS, abs=0.5)
    keys.bench(pool[0], 5)
    assert keys.soonest_free("openai") == pytest.approx(keys.MAX_BENCH_SECONDS, abs=0.5)


# --- refused keys ---------------------------------------------------------------------


async def test_a_refused_key_still_stored_is_refetched_once_then_benched_until_the_next_refresh(
    aws_pool: Any, fetches: list[str], clock: TestClock
) -> None:
    pool = await keys.pool("openai", epoch=0)
    await keys.rejected(pool[0], epoch=0)
    assert fetches == [SECRET, SECRET]
    pool = await keys.pool("openai", epoch=0)
    assert values(keys.in_turn("openai", pool)) == [B, C]
    # Until the cache expires: then the pool is fetched again and A gets its chance.
    assert keys.soonest_free("openai") == pytest.approx(300, abs=1)
    clock.advance(301)
    pool = await keys.pool("openai", epoch=0)
    assert A in values(keys.in_turn("openai", pool))
    assert fetches == [SECRET] * 3


async def test_a_refused_key_comes_back_when_the_epoch_moves(aws_pool: Any) -> None:
    await keys.rejected((await keys.pool("openai", epoch=0))[0], epoch=0)
    pool = await keys.pool("openai", epoch=1)
    assert A in values(keys.in_turn("openai", pool))


async def test_a_refused_key_that_was_rotated_out_leaves_the_new_key_in_turn(
    aws_pool: Any,
) -> None:
    pool = await keys.pool("openai", epoch=0)
    new = "sk-pool-key-new-0123456789"
    aws_pool.put_secret_value(SecretId=SECRET, SecretString=json.dumps([new, B, C]))
    await keys.rejected(pool[0], epoch=0)
    pool = await keys.pool("openai", epoch=0)
    assert sorted(values(keys.in_turn("openai", pool))) == sorted([new, B, C])


async def test_every_caller_refused_at_once_is_served_by_one_fetch(
    aws_pool: Any, fetches: list[str]
) -> None:
    refused = (await keys.pool("openai", epoch=0))[0]
    await asyncio.gather(*(keys.rejected(refused, epoch=0) for _ in range(20)))
    assert fetches == [SECRET, SECRET]
    # A refusal that arrives later, for a key already benched, fetches nothing either.
    await keys.rejected(refused, epoch=0)
    assert fetches == [SECRET, SECRET]


async def test_keys_refused_one_after_the_other_stay_benched_together(
    aws_pool: Any, fetches: list[str]
) -> None:
    pool = await keys.pool("openai", epoch=0)
    await keys.rejected(pool[0], epoch=0)
    await keys.rejected(pool[1], epoch=0)
    pool = await keys.pool("openai", epoch=0)
    assert values(keys.in_turn("openai", pool)) == [C]
    assert len(fetches) == 3  # one per refused key, none for the third


async def test_a_refused_key_is_benched_on_the_last_good_pool_while_the_store_is_down(
    aws_pool: Any, settings: Settings
) -> None:
    pool = await keys.pool("openai", epoch=0)
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    await keys.rejected(pool[2], epoch=0)
    assert values(keys.in_turn("openai", await keys.pool("openai", epoch=0))) == [A, B]


async def test_refresh_keeps_its_meaning_for_single_key_callers(env_pool: Settings) -> None:
    refused = await keys.get_key("openai", epoch=0)
    assert refused.reveal() == A
    env_pool.PROVIDER_ENV_KEYS = {**env_pool.PROVIDER_ENV_KEYS, "openai": ""}
    # A is gone from the store: the answer is the next key in turn.
    assert (await keys.refresh("openai", rejected=refused, epoch=0)).reveal() in (B, C)
    assert A not in values(await keys.pool("openai", epoch=0))


async def test_refresh_after_a_refusal_of_a_key_still_stored_answers_another_key(
    env_pool: Settings,
) -> None:
    refused = await keys.get_key("openai", epoch=0)
    for _ in range(4):
        assert (await keys.refresh("openai", rejected=refused, epoch=0)).reveal() != A
