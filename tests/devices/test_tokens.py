from __future__ import annotations

import hashlib
import hmac
import re

from pytest_django import Settings

from devices.tokens import new_device_id, new_token, token_hash, token_prefix


def test_a_token_is_hzt_and_43_url_safe_characters_and_never_repeats() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert re.fullmatch(r"hzt_[A-Za-z0-9_-]{43}", token)


def test_a_device_id_is_opaque_and_url_safe() -> None:
    assert re.fullmatch(r"dev_[A-Za-z0-9_-]{22}", new_device_id())


def test_the_hash_is_hmac_sha256_under_the_configured_pepper(settings: Settings) -> None:
    settings.TOKEN_PEPPER = "pepper-one"
    token = new_token()
    expected = hmac.new(b"pepper-one", token.encode(), hashlib.sha256).hexdigest()
    assert token_hash(token) == expected
    settings.TOKEN_PEPPER = "pepper-two"
    assert token_hash(token) != expected


def test_without_a_pepper_one_is_derived_from_the_secret_key(settings: Settings) -> None:
    settings.TOKEN_PEPPER = ""
    token = new_token()
    settings.SECRET_KEY = "first-secret-key-for-this-test"
    first = token_hash(token)
    assert first == token_hash(token)
    assert first != hashlib.sha256(token.encode()).hexdigest()
    settings.SECRET_KEY = "second-secret-key-for-this-test"
    assert token_hash(token) != first


def test_the_display_prefix_is_the_marker_and_eight_characters() -> None:
    token = new_token()
    assert token_prefix(token) == token[:12]
    assert token_prefix(token).startswith("hzt_")
