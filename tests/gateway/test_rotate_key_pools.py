"""``rotate_key`` on pools: add, replace, remove and list keys without printing any."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from pytest_django import Settings

from gateway.core.store import read_versions
from gateway.proxy import keys
from gateway.proxy.keys import ProviderKey

pytestmark = pytest.mark.usefixtures("fresh_key_cache")

A, B, C = "sk-rotate-key-a-0123456789", "sk-rotate-key-b-0123456789", "sk-rotate-key-c-0123456789"
NEW = "sk-rotate-key-new-0123456789"
ALL_KEYS = (A, B, C, NEW)
SECRET = "hanzo-gateway/openai/api-key"


def rotate(*args: str, stdin: str = "") -> str:
    """Run rotate_key; what it printed (asserted to hold no key)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_key", *args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    printed = out.getvalue() + err.getvalue()
    assert not any(key in printed for key in ALL_KEYS)
    return printed


def refused(*args: str, stdin: str = "") -> str:
    """rotate_key's one-line error (asserted to hold no key)."""
    with pytest.raises(CommandError) as caught:
        rotate(*args, stdin=stdin)
    message = str(caught.value)
    assert "\n" not in message
    assert not any(key in message for key in ALL_KEYS)
    return message


def stored(secrets_manager: Any) -> Any:
    text = secrets_manager.get_secret_value(SecretId=SECRET)["SecretString"]
    return json.loads(text) if text.startswith("[") else text


def key_id(value: str) -> str:
    return ProviderKey("openai", value).key_id


def listing(printed: str) -> list[tuple[int, str]]:
    return [(int(n), kid) for n, kid in re.findall(r"^(\d+)\s+([0-9a-f]{12})$", printed, re.M)]


@pytest.fixture
def pool_of_two(secrets_manager: Any) -> Any:
    secrets_manager.create_secret(Name=SECRET, SecretString=json.dumps([A, B]))
    return secrets_manager


async def current_epoch() -> int:
    return (await read_versions("-"))[1]


def test_add_turns_a_single_key_into_a_json_list_and_lists_the_key_ids(
    secrets_manager: Any,
) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=A)
    printed = rotate("openai", "--add", stdin=B + "\n")
    assert stored(secrets_manager) == [A, B]
    assert "Stored 2 openai key(s)" in printed and SECRET in printed
    assert listing(printed) == [(1, key_id(A)), (2, key_id(B))]


def test_add_to_a_missing_secret_stores_one_plain_key(secrets_manager: Any) -> None:
    rotate("openai", "--add", stdin=A)
    assert stored(secrets_manager) == A


def test_replace_changes_only_the_key_at_its_position(pool_of_two: Any) -> None:
    rotate("openai", "--replace", "2", stdin=NEW)
    assert stored(pool_of_two) == [A, NEW]


def test_remove_drops_one_key_and_a_pool_of_one_is_stored_plain(pool_of_two: Any) -> None:
    printed = rotate("openai", "--remove", "1")
    assert stored(pool_of_two) == B  # a plain string: gateways that predate pools read it
    assert listing(printed) == [(1, key_id(B))]


def test_without_options_the_pool_becomes_the_one_key_read(pool_of_two: Any) -> None:
    rotate("openai", stdin=NEW)
    assert stored(pool_of_two) == NEW


async def test_list_shows_positions_and_key_ids_and_changes_nothing(pool_of_two: Any) -> None:
    before = await current_epoch()
    printed = await asyncio.to_thread(rotate, "openai", "--list", stdin=NEW)
    assert listing(printed) == [(1, key_id(A)), (2, key_id(B))]
    assert stored(pool_of_two) == [A, B]
    assert await current_epoch() == before


def test_list_on_the_env_backend_shows_the_environment_s_pool(settings: Settings) -> None:
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {"openai": A, "anthropic": "", "digitalocean": ""}
    settings.PROVIDER_ENV_KEY_LISTS = {"openai": [C], "anthropic": [], "digitalocean": []}
    assert listing(rotate("openai", "--list")) == [(1, key_id(A)), (2, key_id(C))]


async def test_every_change_bumps_the_epoch_so_gateways_use_the_new_pool_next_request(
    pool_of_two: Any,
) -> None:
    epoch = await current_epoch()
    assert [key.reveal() for key in await keys.pool("openai", epoch=epoch)] == [A, B]
    await asyncio.to_thread(rotate, "openai", "--add", stdin=C)
    after = await current_epoch()
    assert after > epoch
    assert [key.reveal() for key in await keys.pool("openai", epoch=after)] == [A, B, C]


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (("--replace", "3"), NEW, "no key 3: the pool has 2 key(s)"),
        (("--replace", "0"), NEW, "no key 0"),
        (("--remove", "-1"), "", "no key -1"),
        (("--add",), A, "keys 1 and 3 would be the same"),
        (("--replace", "2"), A, "keys 1 and 2 would be the same"),
        (("--add",), "", "empty key"),
        (("--add",), f"{NEW} {C}", "whitespace"),
    ],
)
def test_bad_positions_and_keys_are_refused_in_one_line_and_nothing_changes(
    pool_of_two: Any, args: tuple[str, ...], stdin: str, reason: str
) -> None:
    assert reason in refused("openai", *args, stdin=stdin)
    assert stored(pool_of_two) == [A, B]


def test_the_last_key_of_a_pool_is_never_removed(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=A)
    assert "last key" in refused("openai", "--remove", "1")
    assert stored(secrets_manager) == A


def test_an_unusable_stored_secret_is_named_and_a_plain_rotation_replaces_it(
    secrets_manager: Any,
) -> None:
    secrets_manager.create_secret(Name=SECRET, SecretString=json.dumps({"key": A}))
    assert "neither a key nor a JSON list" in refused("openai", "--add", stdin=NEW)
    rotate("openai", stdin=NEW)
    assert stored(secrets_manager) == NEW


def test_options_are_one_at_a_time(pool_of_two: Any) -> None:
    with pytest.raises(CommandError):
        rotate("openai", "--add", "--remove", "1", stdin=NEW)
    assert stored(pool_of_two) == [A, B]


def test_changes_are_refused_on_the_env_backend_naming_both_variables(settings: Settings) -> None:
    settings.SECRETS_BACKEND = "env"
    message = refused("openai", "--add", stdin=NEW)
    assert "OPENAI_API_KEY" in message and "OPENAI_API_KEYS" in message


def test_an_unknown_provider_is_refused_before_anything_is_read(secrets_manager: Any) -> None:
    assert "unknown provider 'mistral'" in refused("mistral", "--list")
