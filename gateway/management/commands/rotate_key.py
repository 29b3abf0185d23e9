"""``manage.py rotate_key PROVIDER``: change a provider's key pool; a new key is read
from standard input, never from arguments, and no key is ever printed."""

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
        "Change the API key pool of PROVIDER (openai, anthropic, digitalocean) in AWS "
        "Secrets Manager (SECRETS_BACKEND=aws). With no option the pool becomes the one key "
        "read from standard input (never from arguments); --add appends it, --replace N "
        "replaces the N-th key (1-based), --remove N drops the N-th (never the last); "
        "--list shows each position's key_id (on the env backend too). No key is ever printed."
    )
    # Tests pass a file-like object as stdin through call_command.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("provider")
        change = parser.add_mutually_exclusive_group()
        change.add_argument("--add", action="store_true", help="append the key to the pool")
        change.add_argument("--replace", type=int, metavar="N", help="replace the N-th key")
        change.add_argument("--remove", type=int, metavar="N", help="drop the N-th key")
        change.add_argument("--list", action="store_true", help="show each key's key_id")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = options["provider"]
        if provider not in keys.PROVIDERS:
            raise CommandError(
                f"unknown provider {provider[:40]!r}: use one of {', '.join(keys.PROVIDERS)}"
            )
        if options["list"] and settings.SECRETS_BACKEND != "aws":
            self._show(provider, list(keys.env_pool(provider)))
            return
        if settings.SECRETS_BACKEND != "aws":
            name = ENV_NAMES[provider]
            raise CommandError(
                f"SECRETS_BACKEND is 'env': set {name} (or a comma-separated {name}S) in the "
                "gateway's environment and restart it (or use SECRETS_BACKEND=aws to rotate "
                "without restart)"
            )
        stdin = options.get("stdin") or sys.stdin
        replace, remove = options["replace"], options["remove"]
        if options["list"]:
            self._show(provider, self._stored(provider))
            return
        if options["add"]:
            pool = self._stored(provider)
            pool.append(self._read_key(stdin))
        elif replace is not None:
            pool = self._stored(provider)
            pool[self._index(replace, pool)] = self._read_key(stdin)
        elif remove is not None:
            pool = self._stored(provider)
            index = self._index(remove, pool)
            if len(pool) == 1:
                raise CommandError("refusing to remove the pool's last key: replace it instead")
            del pool[index]
        else:
            pool = [self._read_key(stdin)]
        for position, value in enumerate(pool, start=1):
            if pool.index(value) + 1 != position:
                raise CommandError(f"keys {pool.index(value) + 1} and {position} would be the same")
        self._store(provider, pool)
        self.stdout.write(
            f"Stored {len(pool)} {provider} key(s) in AWS Secrets Manager "
            f"({secret_name(provider)}); every gateway process uses them from its next request."
        )
        self._show(provider, pool)

    @staticmethod
    def _stored(provider: str) -> list[str]:
        try:
            return [key.reveal() for key in keys.stored_pool(provider)]
        except SecretsStoreUnavailable as exc:
            raise CommandError(f"could not read AWS Secrets Manager ({exc})") from None
        except keys.UnusableSecret:
            raise CommandError(
                f"{secret_name(provider)} holds neither a key nor a JSON list of keys: "
                "rotate_key without options replaces it with one key"
            ) from None

    @staticmethod
    def _index(position: int, pool: list[str]) -> int:
        if not 1 <= position <= len(pool):
            raise CommandError(f"no key {position}: the pool has {len(pool)} key(s)")
        return position - 1

    @staticmethod
    def _store(provider: str, pool: list[str]) -> None:
        try:
            keys.store_pool(provider, pool)
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

    def _show(self, provider: str, pool: list[str]) -> None:
        # Positions and key_ids only: the fingerprints logs and alerts name.
        for position, value in enumerate(pool, start=1):
            self.stdout.write(f"{position}  {keys.ProviderKey(provider, value).key_id}")

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
