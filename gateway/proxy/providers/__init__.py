"""Provider adapters by provider name (see ``base`` for the contract)."""

from __future__ import annotations

from gateway.proxy.providers.anthropic import AnthropicAdapter
from gateway.proxy.providers.base import Adapter, EmbeddingsAdapter
from gateway.proxy.providers.openai import OpenAIAdapter

_OPENAI = OpenAIAdapter("openai")
_DIGITALOCEAN = OpenAIAdapter("digitalocean")

ADAPTERS: dict[str, Adapter] = {
    "openai": _OPENAI,
    "digitalocean": _DIGITALOCEAN,
    "anthropic": AnthropicAdapter(),
}
# Providers with an embeddings API (Anthropic has none).
EMBEDDINGS_ADAPTERS: dict[str, EmbeddingsAdapter] = {
    "openai": _OPENAI,
    "digitalocean": _DIGITALOCEAN,
}


def adapter_for(provider: str) -> Adapter:
    return ADAPTERS[provider]


def embeddings_adapter_for(provider: str) -> EmbeddingsAdapter | None:
    return EMBEDDINGS_ADAPTERS.get(provider)
