"""AWS Secrets Manager behind two small functions (boto3 stays in this module).

Blocking calls: the key manager runs them in a thread, off the event loop.
Timeouts are short and retries few, so an unreachable endpoint is noticed in
seconds and the last good key keeps serving meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings


class SecretsStoreUnavailable(Exception):
    """Secrets Manager did not answer, or refused us (credentials, permissions)."""


class SecretNotFound(Exception):
    pass


def secret_name(provider: str) -> str:
    return f"hanzo-gateway/{provider}/api-key"


_clients: dict[tuple[str, str | None], Any] = {}
_clients_lock = threading.Lock()


def _client() -> Any:
    import boto3
    from botocore.config import Config

    # Keyed by region and endpoint, read at call time, so tests can point
    # settings at a local Secrets Manager.
    where = (settings.AWS_REGION, settings.AWS_ENDPOINT_URL)
    with _clients_lock:
        client = _clients.get(where)
        if client is None:
            config = Config(
                connect_timeout=2,
                read_timeout=5,
                retries={"max_attempts": 2, "mode": "standard"},
            )
            client = boto3.session.Session().client(
                "secretsmanager", region_name=where[0], endpoint_url=where[1], config=config
            )
            _clients[where] = client
        return client


def get_secret(name: str) -> str:
    """The secret's ``SecretString``; SecretNotFound or SecretsStoreUnavailable otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = _client().get_secret_value(SecretId=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise SecretNotFound(name) from None
        raise SecretsStoreUnavailable(exc.response.get("Error", {}).get("Code", "")) from None
    except BotoCoreError as exc:
        raise SecretsStoreUnavailable(type(exc).__name__) from None
    value = answer.get("SecretString")
    if not isinstance(value, str):
        raise SecretNotFound(name)
    return value


def put_secret(name: str, value: str) -> None:
    """Store ``value`` as the secret's current version, creating the secret if missing."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client()
    try:
        try:
            client.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            client.create_secret(Name=name, SecretString=value)
    except ClientError as exc:
        raise SecretsStoreUnavailable(exc.response.get("Error", {}).get("Code", "")) from None
    except BotoCoreError as exc:
        raise SecretsStoreUnavailable(type(exc).__name__) from None
