from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from pytest_django import Settings

from gateway.proxy import keys
from tests.support.processes import local_aws
from tests.support.staff import (  # noqa: F401  (fixtures)
    fast_password_hashing,
    plain_user,
    staff_user,
)


@pytest.fixture
def fresh_key_cache() -> Iterator[None]:
    """No provider key pool, bench or turn left from another test."""
    keys.clear_cache()
    yield
    keys.clear_cache()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with local_aws() as url:
        yield url


@pytest.fixture
def secrets_manager(moto_server: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings pointing at a fresh local Secrets Manager; returns a boto3 client for it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    settings.SECRETS_BACKEND = "aws"
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    settings.SECRET_CACHE_SECONDS = 300
    return boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
