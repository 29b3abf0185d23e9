"""Provider adapters by provider name (see ``base`` for the contract)."""

from __future__ import annotations

from gateway.proxy.providers.anthropic import AnthropicAdapter
from gateway.proxy.providers.base import Adapter
from gateway.proxy.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter("openai"),
    "digitalocean": OpenAIAdapter("digitalocean"),
    "anthropic": AnthropicAdapter(),
}


def adapter_for(provider: str) -> Adapter:
    return ADAPTERS[provider]
