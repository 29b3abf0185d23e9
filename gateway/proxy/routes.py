"""The route table: which public model names exist, where they go, who may use them.

The hot path never queries the database for a route. Each process keeps the
enabled routes in memory, loaded on first use and reloaded when the global
epoch (``gateway.core.store``) has moved since the load; saving a route bumps it
(see ``ModelRoute.save``), so an admin edit is seen by every process on its
next request. The epoch is the one the caller already read for the request
(``read_versions``); without it, ``resolve`` reads it itself.

Prices are USD per million tokens, which is also micro-dollars per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billing.pricing import cost_micro_usd
from gateway import fallbacks as chains
from gateway.core.errors import InvalidRequest, NotFound, PermissionDenied
from gateway.core.loops import StampedCache
from gateway.core.store import read_versions
from usage.types import Tier

TIERS = ("free", "paid")
# What a route serves (ModelRoute.Kind): /v1/chat/completions or /v1/embeddings.
CHAT, EMBEDDING = "chat", "embedding"
ENDPOINT_OF_KIND = {CHAT: "/v1/chat/completions", EMBEDDING: "/v1/embeddings"}

# SPEC section 6, with the providers' own model ids.
SEED_ROUTES: tuple[dict[str, Any], ...] = (
    {
        "public_name": "llama3.3-70b-instruct",
        "provider": "digitalocean",
        "provider_model": "llama3.3-70b-instruct",
        "input_price_usd": Decimal("0.50"),
        "output_price_usd": Decimal("0.50"),
        "is_free_tier": True,
        "is_paid_tier": True,
    },
    {
        "public_name": "llama3-8b-instruct",
        "provider": "digitalocean",
        "provider_model": "llama3-8b-instruct",
        "input_price_usd": Decimal("0.10"),
        "output_price_usd": Decimal("0.10"),
        "is_free_tier": True,
        "is_paid_tier": True,
    },
    {
        "public_name": "deepseek-r1-distill-llama-70b",
        "provider": "digitalocean",
        "provider_model": "deepseek-r1-distill-llama-70b",
        "input_price_usd": Decimal("0.50"),
        "output_price_usd": Decimal("0.50"),
        "is_free_tier": True,
        "is_paid_tier": True,
    },
    {
        "public_name": "anthropic-claude-4-sonnet",
        "provider": "anthropic",
        "provider_model": "claude-sonnet-4-20250514",
        "input_price_usd": Decimal("3.00"),
        "output_price_usd": Decimal("15.00"),
        "accepts_images": True,
        "max_tokens_per_image": 1800,
        "is_free_tier": False,
        "is_paid_tier": True,
    },
    {
        "public_name": "openai-gpt-5",
        "provider": "openai",
        "provider_model": "gpt-5",
        "input_price_usd": Decimal("5.00"),
        "output_price_usd": Decimal("15.00"),
        "has_hidden_reasoning": True,
        "accepts_images": True,
        "max_tokens_per_image": 2890,  # see gateway/migrations/0005_modelroute_images.py
        "is_free_tier": False,
        "is_paid_tier": True,
    },
    {
        "public_name": "openai-gpt-4o",
        "provider": "openai",
        "provider_model": "gpt-4o",
        "input_price_usd": Decimal("2.50"),
        "output_price_usd": Decimal("10.00"),
        "accepts_images": True,
        "max_tokens_per_image": 1445,
        "is_free_tier": False,
        "is_paid_tier": True,
    },
    # Embeddings (migration 0004): OpenAI's published price, no output tokens.
    {
        "public_name": "openai-text-embedding-3-small",
        "provider": "openai",
        "provider_model": "text-embedding-3-small",
        "input_price_usd": Decimal("0.02"),
        "output_price_usd": Decimal("0"),
        "kind": EMBEDDING,
        "is_free_tier": True,
        "is_paid_tier": True,
    },
)


def seed_routes(route_model: Any = None) -> None:
    """Create or reset the routes of SPEC section 6 (the data migration and tests call this)."""
    if route_model is None:
        from gateway.models import ModelRoute

        route_model = ModelRoute
    # A historical model from before the route kind (migration 0002) gets the
    # chat routes only; migration 0004 adds the kind and the embedding route.
    fields = {field.name for field in route_model._meta.get_fields()}
    for seed in SEED_ROUTES:
        if "kind" not in fields and seed.get("kind", CHAT) != CHAT:
            continue
        values = {name: value for name, value in seed.items() if name != "public_name"}
        if "kind" in fields:
            values.setdefault("kind", CHAT)
        route = route_model.objects.filter(public_name=seed["public_name"]).first()
        if route is None:
            route = route_model(public_name=seed["public_name"])
        for name, value in {**values, "is_enabled": True}.items():
            setattr(route, name, value)
        route.save()


class ModelNotFound(NotFound):
    code = "model_not_found"
    message = "The model does not exist"


class WrongModelKind(InvalidRequest):
    code = "invalid_request"
    message = "The model is not served on this endpoint"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"
    message = "Your device's tier may not use this model"


@dataclass(frozen=True, slots=True)
class Route:
    public_name: str
    provider: str
    provider_model: str
    input_price_usd: Decimal  # per million tokens = micro-dollars per token
    output_price_usd: Decimal
    tiers: frozenset[str]
    created: int  # unix seconds, for GET /v1/models
    # Reasoning tokens billed but never shown: unknown usage costs the whole output bound.
    has_hidden_reasoning: bool = False
    accepts_images: bool = False
    max_tokens_per_image: int = 0  # the input bound counts each image at this
    kind: str = CHAT  # CHAT or EMBEDDING: the one endpoint that serves it
    # The routes to try, in order, when this one fails before any output: its
    # fallbacks expanded (gateway.fallbacks.chain), enabled or not; a request
    # keeps those it may use (``candidates``).
    fallbacks: tuple[str, ...] = ()

    def allows(self, tier: Tier) -> bool:
        return tier in self.tiers

    def cost_micro_usd(self, tokens_in: int, tokens_out: int) -> int:
        """What ``tokens_in`` and ``tokens_out`` cost on this route (``billing.pricing``)."""
        return cost_micro_usd(
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            input_price=self.input_price_usd,
            output_price=self.output_price_usd,
        )


def _load_routes() -> dict[str, Route]:
    from django.db import connection

    from gateway.models import ModelRoute

    try:
        return _rows_to_routes(ModelRoute.objects.all())
    finally:
        # This runs in a worker thread outside any request: give the
        # connection back (to the pool) rather than hold it in that thread.
        if not connection.in_atomic_block:
            connection.close()


_table: StampedCache[dict[str, Route]] = StampedCache(_load_routes)


def route_of(row: Any, fallbacks: tuple[str, ...] = ()) -> Route:
    """The hot path's copy of a ``ModelRoute`` row, with its expanded fallbacks."""
    return Route(
        public_name=row.public_name,
        provider=row.provider,
        provider_model=row.provider_model,
        input_price_usd=row.input_price_usd,
        output_price_usd=row.output_price_usd,
        tiers=row.tiers,
        created=int(row.created_at.timestamp()),
        has_hidden_reasoning=row.has_hidden_reasoning,
        accepts_images=row.accepts_images,
        max_tokens_per_image=row.max_tokens_per_image,
        kind=row.kind,
        fallbacks=fallbacks,
    )


def _rows_to_routes(rows: Any) -> dict[str, Route]:
    """The enabled routes by name; chains expand through disabled ones too."""
    rows = list(rows)
    fallbacks_of = {row.public_name: list(row.fallbacks or ()) for row in rows}
    return {
        row.public_name: route_of(row, chains.chain(row.public_name, fallbacks_of))
        for row in rows
        if row.is_enabled
    }


async def _current_epoch() -> int:
    # The device part of read_versions is irrelevant here; one MGET is as
    # cheap as one GET.
    _, epoch = await read_versions("-")
    return epoch


async def route_table(*, epoch: int | None = None) -> dict[str, Route]:
    """The enabled routes by public name, as of ``epoch`` (read when not given)."""
    if epoch is None:
        epoch = await _current_epoch()
    return await _table.get(epoch)


def clear_cache() -> None:
    """Forget the loaded table (tests that rewrite routes without an epoch bump)."""
    _table.clear()


async def resolve(model: str, tier: Tier, *, epoch: int | None = None, kind: str = CHAT) -> Route:
    """The route for ``model``; 404 ``model_not_found`` (also when disabled), 400
    ``invalid_request`` when it serves another endpoint than ``kind``'s, 403 for the tier."""
    routes = await route_table(epoch=epoch)
    route = routes.get(model)
    if route is None:
        raise ModelNotFound(f"The model '{model[:100]}' does not exist")
    if route.kind != kind:
        raise WrongModelKind(
            f"The model '{model}' is not served on {ENDPOINT_OF_KIND[kind]}; "
            f"use {ENDPOINT_OF_KIND.get(route.kind, 'another endpoint')}",
            param="model",
        )
    if not route.allows(tier):
        raise ModelNotAllowed(f"The model '{model}' is not available on the {tier} tier")
    return route


async def fallbacks_for(route: Route, tier: Tier, *, epoch: int | None = None) -> list[Route]:
    """``route``'s fallbacks that are enabled, of its kind and open to ``tier``, in order."""
    if not route.fallbacks:
        return []
    routes = await route_table(epoch=epoch)
    found = (routes.get(name) for name in route.fallbacks)
    return [
        fallback
        for fallback in found
        if fallback is not None and fallback.kind == route.kind and fallback.allows(tier)
    ]


async def models_for_tier(tier: Tier, *, epoch: int | None = None) -> list[Route]:
    """The routes ``tier`` may use, by public name."""
    routes = await route_table(epoch=epoch)
    return sorted(
        (route for route in routes.values() if route.allows(tier)),
        key=lambda route: route.public_name,
    )


def models_payload(routes: list[Route], *, is_available: Callable[[Route], bool]) -> dict[str, Any]:
    """``GET /v1/models`` in OpenAI's list format, with extra fields its SDK ignores."""
    return {
        "object": "list",
        "data": [
            {
                "id": route.public_name,
                "object": "model",
                "created": route.created,
                "owned_by": route.provider,
                # False: its provider has no key here (requests answer 503).
                "available": is_available(route),
                # "chat" (/v1/chat/completions) or "embedding" (/v1/embeddings).
                "kind": route.kind,
                "capabilities": {
                    "images": route.accepts_images,
                    "tools": route.kind == CHAT,
                    "reasoning": route.has_hidden_reasoning,
                },
            }
            for route in routes
        ],
    }
