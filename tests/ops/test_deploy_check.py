"""``manage.py check --deploy`` under the environment the docker-compose deployment sets.

The environment is read from the deployment's own files, the way compose
builds it: ``.env.example`` (the operator's ``.env``, with its "change-me"
secrets replaced as docs/production.md says) overridden by the ``environment``
of docker-compose.yml's gateway service. So a warning introduced in either
file, or in the settings, fails here.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import yaml

from tests.support.processes import ROOT, base_environment, manage_py

INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def dotenv(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip('"')
    return values


def compose_environment(**overrides: str) -> dict[str, str]:
    dot_env = {
        name: secrets.token_urlsafe(50) if value == "change-me" else value
        for name, value in dotenv((ROOT / ".env.example").read_text()).items()
    }
    dot_env["ALLOWED_HOSTS"] = "api.example.com,localhost,127.0.0.1"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["gateway"]

    def interpolate(value: object) -> str:
        return INTERPOLATION.sub(
            lambda m: dot_env.get(m.group(1)) or (m.group(2) or ""), str(value)
        )

    environment = {**dot_env}
    environment.update({k: interpolate(v) for k, v in service["environment"].items()})
    return {**base_environment(), **environment, **overrides}


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return manage_py("check", "--deploy", "--fail-level", "WARNING", env=env, timeout=120)


def test_check_deploy_is_clean_under_the_compose_deployments_settings(tmp_path: Path) -> None:
    env = compose_environment()
    assert env["DATABASE_URL"].startswith("postgres://hanzo:")
    assert env["REDIS_URL"] and env["DEBUG"] == "false"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/hanzo-metrics"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # stands in for the container's tmpfs
    result = check_deploy(env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_on_the_example_secret_and_on_debug(tmp_path: Path) -> None:
    weak = check_deploy(
        compose_environment(SECRET_KEY="change-me", PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    )
    assert weak.returncode != 0 and "security.W009" in weak.stderr
    result = check_deploy(compose_environment(DEBUG="true", PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    assert result.returncode != 0 and "security.W018" in result.stderr
