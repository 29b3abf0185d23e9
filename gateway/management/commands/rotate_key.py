"""``manage.py rotate_key PROVIDER``: store a new provider key, read from standard input."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from gateway.core.secrets_aws import SecretsStoreUnavailable, secret_name
from gateway.core.store import bump_epoch
from gateway.proxy import keys

ENV_NAMES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "digitalocean": "DIGITALOCEAN_API_KEY",
}


class Command(BaseCommand):
    help = (
        "Store a new API key for PROVIDER (openai, anthropic, digitalocean) in the secrets "
        "backend. The key is read from standard input, never from arguments."
    )
    # Tests pass a file-like object as stdin through call_command.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("provider")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = options["provider"]
        if provider not in keys.PROVIDERS:
            raise CommandError(
                f"unknown provider {provider[:40]!r}: use one of {', '.join(keys.PROVIDERS)}"
            )
        if settings.SECRETS_BACKEND != "aws":
            raise CommandError(
                f"SECRETS_BACKEND is 'env': set {ENV_NAMES[provider]} in the gateway's "
                "environment and restart it (or use SECRETS_BACKEND=aws to rotate without restart)"
            )
        value = self._read_key(options.get("stdin") or sys.stdin)
        try:
            keys.store_key(provider, value)
        except SecretsStoreUnavailable as exc:
            raise CommandError(f"could not store the key in AWS Secrets Manager ({exc})") from None
        try:
            bump_epoch()
        except (RedisError, OSError) as exc:
            raise CommandError(
                "the key is stored, but running gateways could not be told "
                f"({type(exc).__name__}); "
                f"they use it within SECRET_CACHE_SECONDS ({settings.SECRET_CACHE_SECONDS}s)"
            ) from None
        self.stdout.write(
            f"Stored a new {provider} key in AWS Secrets Manager ({secret_name(provider)}); "
            "every gateway process uses it from its next request."
        )

    @staticmethod
    def _read_key(stream: Any) -> str:
        # From a terminal, prompt without echo; from a pipe, read it all.
        prompt = "New key (not echoed): "
        value = (getpass.getpass(prompt) if stream.isatty() else stream.read()).strip()
        if not value:
            raise CommandError("empty key: pipe the new key on standard input")
        if any(character.isspace() for character in value):
            raise CommandError("the key contains whitespace: pipe exactly one key")
        return value
