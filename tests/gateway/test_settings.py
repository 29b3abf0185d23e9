from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.processes import ROOT, base_environment


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = base_environment()
    for name in ("SECRET_KEY", "TOKEN_PEPPER", "ADMIN_REQUIRE_2FA", "WEB_CONCURRENCY"):
        environment.pop(name, None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'profile': s.GATEWAY_PROFILE, 'store': s.GATEWAY_STORE, "
    "'engine': s.DATABASES['default']['ENGINE'], '2fa': s.ADMIN_REQUIRE_2FA, "
    "'key': bool(s.SECRET_KEY), 'budget': str(s.DAILY_BUDGET_USD), "
    "'free': s.RATE_LIMITS['free'], 'cors': s.CORS_ALLOWED_ORIGINS}))"
)


def shown_settings(**env: str) -> dict[str, Any]:
    """The settings SHOW prints, in a process started with ``env``."""
    result = run_python(SHOW, **env)
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def test_zero_environment_runs_the_embedded_profile_with_spec_defaults() -> None:
    shown = shown_settings()
    assert shown["profile"] == "embedded"
    assert shown["store"] == "memory"
    assert shown["engine"] == "django.db.backends.sqlite3"
    assert shown["2fa"] is False
    assert shown["key"] is True
    assert shown["budget"] == "50"
    assert shown["free"] == {
        "device_per_day": 100,
        "ip_per_day": 500,
        "user_per_day": 1000,
        "device_per_minute": 5,
    }
    assert shown["cors"] == ["https://app.hanzo.ai", "tauri://localhost"]


def test_the_embedded_secret_key_is_generated_once_and_kept() -> None:
    code = (
        "import django; django.setup(); "
        "from django.conf import settings; print(settings.SECRET_KEY)"
    )
    first, second = run_python(code), run_python(code)
    assert first.returncode == 0 and second.returncode == 0
    assert first.stdout == second.stdout and len(first.stdout.strip()) >= 50


def test_database_and_redis_urls_select_the_production_profile() -> None:
    shown = shown_settings(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/hanzo",
        REDIS_URL="redis://127.0.0.1:6379/15",
        SECRET_KEY="x" * 50,
    )
    assert shown["profile"] == "production"
    assert shown["store"] == "redis"
    assert shown["engine"] == "django.db.backends.postgresql"
    assert shown["2fa"] is True


def test_the_production_profile_refuses_to_start_without_a_secret_key() -> None:
    result = run_python(
        SHOW,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/hanzo",
        REDIS_URL="redis://127.0.0.1:6379/15",
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set on the production profile" in result.stderr


def test_a_malformed_setting_is_a_clear_configuration_error() -> None:
    result = run_python(SHOW, DAILY_BUDGET_USD="fifty")
    assert result.returncode != 0
    assert "DAILY_BUDGET_USD must be a decimal number" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BREAKER_FAILURES", "0", "BREAKER_FAILURES must be at least 1, got 0"),
        ("BREAKER_WINDOW_SECONDS", "-5", "BREAKER_WINDOW_SECONDS must not be negative"),
        ("BREAKER_SYNC_SECONDS", "0", "BREAKER_SYNC_SECONDS must be a positive number of seconds"),
        ("BREAKER_COOLDOWN_SECONDS", "inf", "BREAKER_COOLDOWN_SECONDS must be a positive number"),
        ("BREAKER_PROBE_SECONDS", "soon", "BREAKER_PROBE_SECONDS must be a positive number"),
    ],
)
def test_a_breaker_setting_that_could_never_work_is_refused(
    name: str, value: str, message: str
) -> None:
    result = run_python(SHOW, **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_breaker_settings_default_to_five_failures_in_thirty_seconds() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.BREAKER_FAILURES, s.BREAKER_WINDOW_SECONDS, s.BREAKER_COOLDOWN_SECONDS, "
        "s.BREAKER_PROBE_SECONDS, s.BREAKER_SYNC_SECONDS)"
    )
    result = run_python(code)
    assert result.stdout.split() == ["5", "30", "30.0", "120.0", "1.0"], result.stderr


def test_the_check_framework_warns_about_several_workers_on_the_in_process_store() -> None:
    result = run_python(
        "import sys; from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'check'])",
        WEB_CONCURRENCY="4",
    )
    assert "hanzo.W001" in result.stderr + result.stdout


def test_the_deploy_check_warns_about_sqlite() -> None:
    result = run_python(
        "from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'check', '--deploy'])",
    )
    assert "hanzo.W002" in result.stderr + result.stdout
