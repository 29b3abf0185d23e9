"""pytest plugin: ``pytest_plugins = ["tests.fakes.conftest_plugin"]``.

* ``fake_provider`` (session): one FakeProvider started for the whole run.
* ``provider`` (function): the same instance, ``reset()`` before the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.provider import FakeProvider


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def provider(fake_provider: FakeProvider) -> FakeProvider:
    fake_provider.reset()
    return fake_provider
