"""The embedded profile's files are readable by their owner only (SPEC section 1).

``var/`` holds the SQLite database (staff sessions, TOTP seeds, token
hashes), the generated ``SECRET_KEY``, the usage spool and the store's
epoch file. Each test runs ``manage.py migrate`` and a gateway process of
its own on the embedded profile, in a private ``VAR_DIR``, whatever profile
the suite runs on.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.devices.support import REGISTRATION
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import provider_environment
from tests.support.processes import (
    GatewayServer,
    base_environment,
    manage_py,
    start_gateway,
    wait_for,
)

# Names that would take the child processes off the embedded profile's
# defaults: the key must be generated, the spool must live in VAR_DIR.
NOT_INHERITED = ("SECRET_KEY", "TOKEN_PEPPER", "USAGE_SPOOL_DIR", "GATEWAY_TEST_CLOCK_FILE")


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def embedded_env(var_dir: Path, provider: FakeProvider) -> dict[str, str]:
    env = {k: v for k, v in base_environment().items() if k not in NOT_INHERITED}
    env.update(provider_environment(provider), VAR_DIR=str(var_dir), ADMIN_REQUIRE_2FA="false")
    return env


@pytest.fixture
def migrated(embedded_env: dict[str, str], var_dir: Path) -> Path:
    manage("migrate", "--noinput", env=embedded_env)
    return var_dir


@pytest.fixture
def serve(embedded_env: dict[str, str]) -> Iterator[list[GatewayServer]]:
    servers: list[GatewayServer] = []
    yield servers
    for server in servers:
        server.stop()


def manage(*args: str, env: dict[str, str]) -> str:
    done = manage_py(*args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def open_to_others(root: Path) -> dict[str, str]:
    """Every path under ``root`` (itself included) that its group or others may use."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found[str(path.relative_to(root.parent))] = oct(mode)
    return found


def test_migrate_creates_the_database_and_the_secret_key_owner_only(migrated: Path) -> None:
    assert (migrated / "gateway.sqlite3").is_file()
    assert (migrated / "secret_key").is_file()
    assert open_to_others(migrated) == {}


def test_a_gateway_that_served_requests_leaves_nothing_readable_by_others(
    migrated: Path, embedded_env: dict[str, str], serve: list[GatewayServer]
) -> None:
    server = start_gateway(embedded_env)
    serve.append(server)
    registered = httpx.post(f"{server.url}/v1/devices/register", json=REGISTRATION, timeout=30)
    assert registered.status_code == 201, registered.text
    manage("approve_device", registered.json()["deviceId"], env=embedded_env)
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "llama3-8b-instruct", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {registered.json()['sessionToken']}"},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    spool = migrated / "spool"
    wait_for(lambda: any(spool.glob("*.jsonl")), timeout=10, what="a spool segment")
    assert (migrated / "store-epoch").is_file()  # the approval moved the store's epoch
    with closing(sqlite3.connect(migrated / "gateway.sqlite3")) as reader:
        reader.execute("SELECT count(*) FROM devices_device").fetchone()  # -wal and -shm exist
        assert (migrated / "gateway.sqlite3-wal").exists()
        assert (migrated / "gateway.sqlite3-shm").exists()
        assert open_to_others(migrated) == {}


def test_files_an_older_install_left_open_are_tightened_at_start_up(
    migrated: Path, embedded_env: dict[str, str], serve: list[GatewayServer]
) -> None:
    database = migrated / "gateway.sqlite3"
    spool = migrated / "spool"
    spool.mkdir()
    (spool / "usage-1-1-0.jsonl.rejected").write_bytes(b"{}\n")
    (migrated / "store-epoch").write_text("3")
    for path in (migrated, spool):
        path.chmod(0o755)
    for path in (database, migrated / "secret_key", migrated / "store-epoch", *spool.iterdir()):
        path.chmod(0o644)
    # A reader holds the database open, so its -wal and -shm exist, made 0644 like it.
    with closing(sqlite3.connect(database)) as reader:
        reader.execute("SELECT count(*) FROM devices_device").fetchone()
        assert set(open_to_others(migrated)) == {
            "var",
            "var/gateway.sqlite3",
            "var/gateway.sqlite3-wal",
            "var/gateway.sqlite3-shm",
            "var/secret_key",
            "var/store-epoch",
            "var/spool",
            "var/spool/usage-1-1-0.jsonl.rejected",
        }
        serve.append(start_gateway(embedded_env))
        assert open_to_others(migrated) == {}
