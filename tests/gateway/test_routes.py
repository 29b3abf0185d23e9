from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from pytest_django import Settings

from gateway.core.errors import GatewayError
from gateway.core.store import read_versions
from gateway.models import ModelRoute
from gateway.proxy import routes
from gateway.proxy.routes import Route
from gateway.proxy.validation import prepare_chat
from usage.types import Tier

# SPEC section 6, written out independently of the seed data.
SPEC_ROUTES = {
    "llama3.3-70b-instruct": ("digitalocean", "0.50", "0.50", {"free", "paid"}),
    "llama3-8b-instruct": ("digitalocean", "0.10", "0.10", {"free", "paid"}),
    "deepseek-r1-distill-llama-70b": ("digitalocean", "0.50", "0.50", {"free", "paid"}),
    "anthropic-claude-4-sonnet": ("anthropic", "3.00", "15.00", {"paid"}),
    "openai-gpt-5": ("openai", "5.00", "15.00", {"paid"}),
    "openai-gpt-4o": ("openai", "2.50", "10.00", {"paid"}),
    # Issue 17: embeddings, OpenAI's published price (output 0).
    "openai-text-embedding-3-small": ("openai", "0.02", "0.00", {"free", "paid"}),
}
CHAT_ROUTES = {name: row for name, row in SPEC_ROUTES.items() if "embedding" not in name}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def seeded_routes() -> Iterator[None]:
    routes.seed_routes()
    routes.clear_cache()
    yield
    routes.clear_cache()


@pytest.fixture
def load_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = []
    original = routes._load_routes

    def counting() -> dict[str, Route]:
        calls.append(1)
        return original()

    monkeypatch.setattr(routes._table, "_load", counting)
    return calls


T = TypeVar("T")


async def in_db_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM code from an async test, then release that thread's connection."""

    def run() -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(run)()


def table_as_spec() -> dict[str, tuple[str, str, str, set[str]]]:
    return {
        route.public_name: (
            route.provider,
            f"{route.input_price_usd:.2f}",
            f"{route.output_price_usd:.2f}",
            set(route.tiers),
        )
        for route in ModelRoute.objects.all()
    }


def test_the_seed_is_spec_section_6_exactly() -> None:
    assert table_as_spec() == SPEC_ROUTES
    assert {route.provider_model for route in ModelRoute.objects.all()} == {
        "llama3.3-70b-instruct",
        "llama3-8b-instruct",
        "deepseek-r1-distill-llama-70b",
        "claude-sonnet-4-20250514",
        "gpt-5",
        "gpt-4o",
        "text-embedding-3-small",
    }
    kinds = {route.public_name: route.kind for route in ModelRoute.objects.all()}
    assert {name for name, kind in kinds.items() if kind == "embedding"} == {
        "openai-text-embedding-3-small"
    }


def test_the_data_migration_seeds_an_empty_table() -> None:
    ModelRoute.objects.all().delete()
    migration = importlib.import_module("gateway.migrations.0002_seed_routes")
    migration.seed(apps, None)
    assert table_as_spec() == SPEC_ROUTES


def test_seeding_the_model_of_migration_0002_creates_the_chat_routes_only() -> None:
    """Migration 0002 seeds with the historical model, which has no ``kind`` yet."""
    state = MigrationLoader(connection).project_state(("gateway", "0002_seed_routes"))
    historical = state.apps.get_model("gateway", "ModelRoute")
    saved: list[str] = []

    class Before:  # its fields, and a table that saves nothing
        _meta = historical._meta
        objects = ModelRoute.objects.none()

        def __init__(self, public_name: str) -> None:
            self.public_name = public_name

        def save(self) -> None:
            saved.append(self.public_name)

    routes.seed_routes(Before)
    assert set(saved) == set(CHAT_ROUTES)


def test_migration_0004_adds_the_embedding_route_once_and_leaves_an_edited_one_alone() -> None:
    migration = importlib.import_module("gateway.migrations.0004_modelroute_kind")
    ModelRoute.objects.filter(public_name="openai-text-embedding-3-small").delete()
    migration.seed_embedding_route(apps, None)
    route = ModelRoute.objects.get(public_name="openai-text-embedding-3-small")
    assert (route.kind, route.provider_model) == ("embedding", "text-embedding-3-small")
    assert table_as_spec() == SPEC_ROUTES
    route.input_price_usd = Decimal("0.05")
    route.save()
    migration.seed_embedding_route(apps, None)
    assert ModelRoute.objects.get(public_name=route.public_name).input_price_usd == Decimal("0.05")
    migration.remove_embedding_route(apps, None)
    assert set(table_as_spec()) == set(CHAT_ROUTES)


async def test_a_model_resolves_only_for_its_own_kind() -> None:
    embedding = await routes.resolve("openai-text-embedding-3-small", "free", kind="embedding")
    assert embedding.kind == "embedding"
    with pytest.raises(routes.WrongModelKind) as on_chat:
        await routes.resolve("openai-text-embedding-3-small", "free")
    assert on_chat.value.status == 400
    error = on_chat.value.payload()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "model")
    assert "'openai-text-embedding-3-small'" in error["message"]
    assert "/v1/embeddings" in error["message"]
    with pytest.raises(routes.WrongModelKind):
        await routes.resolve("llama3-8b-instruct", "free", kind="embedding")
    # The kind is checked before the tier: a free device learns the endpoint, not the tier.
    with pytest.raises(routes.WrongModelKind):
        await routes.resolve("openai-gpt-4o", "free", kind="embedding")


def test_the_admin_refuses_an_embedding_route_to_a_provider_without_embeddings(
    admin_client: Client,
) -> None:
    from gateway.proxy.providers import EMBEDDINGS_ADAPTERS

    assert frozenset(EMBEDDINGS_ADAPTERS) == ModelRoute.EMBEDDING_PROVIDERS
    listing = admin_client.get("/admin/gateway/modelroute/?kind__exact=embedding")
    assert listing.status_code == 200
    assert b"openai-text-embedding-3-small" in listing.content
    assert b"llama3-8b-instruct" not in listing.content
    response = admin_client.post(
        "/admin/gateway/modelroute/add/",
        {
            "public_name": "claude-embeddings",
            "provider": "anthropic",
            "provider_model": "none",
            "kind": "embedding",
            "input_price_usd": "1",
            "output_price_usd": "0",
            "is_paid_tier": "on",
            "is_enabled": "on",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert b"has no embeddings API" in response.content
    assert not ModelRoute.objects.filter(public_name="claude-embeddings").exists()


def test_seeding_again_restores_edited_routes_without_duplicates() -> None:
    ModelRoute.objects.filter(public_name="openai-gpt-4o").update(
        input_price_usd=Decimal("99"), is_enabled=False
    )
    routes.seed_routes()
    assert ModelRoute.objects.count() == 7
    assert table_as_spec() == SPEC_ROUTES
    assert ModelRoute.objects.get(public_name="openai-gpt-4o").is_enabled


async def test_resolve_gives_the_route_with_its_provider_model_and_prices() -> None:
    route = await routes.resolve("anthropic-claude-4-sonnet", "paid")
    assert route.provider == "anthropic"
    assert route.provider_model == "claude-sonnet-4-20250514"
    assert (route.input_price_usd, route.output_price_usd) == (Decimal("3"), Decimal("15"))
    assert route.tiers == frozenset({"paid"})


async def test_an_unknown_model_is_404_model_not_found() -> None:
    with pytest.raises(routes.ModelNotFound) as caught:
        await routes.resolve("gpt-17", "paid")
    assert caught.value.status == 404
    assert caught.value.payload()["error"]["code"] == "model_not_found"


async def test_a_disabled_route_is_not_found() -> None:
    await in_db_thread(
        ModelRoute.objects.filter(public_name="llama3-8b-instruct").update, is_enabled=False
    )
    with pytest.raises(routes.ModelNotFound):
        await routes.resolve("llama3-8b-instruct", "free")


async def test_a_paid_model_is_403_model_not_allowed_for_the_free_tier() -> None:
    with pytest.raises(routes.ModelNotAllowed) as caught:
        await routes.resolve("openai-gpt-5", "free")
    assert caught.value.status == 403
    assert caught.value.payload()["error"]["code"] == "model_not_allowed"
    assert (await routes.resolve("llama3-8b-instruct", "free")).provider == "digitalocean"


async def test_warm_lookups_do_not_touch_the_database(load_counter: list[int]) -> None:
    _, epoch = await read_versions("-")
    for _ in range(20):
        await routes.resolve("openai-gpt-4o", "paid", epoch=epoch)
        await routes.models_for_tier("free", epoch=epoch)
    assert len(load_counter) == 1


async def test_concurrent_cold_lookups_load_the_table_once(load_counter: list[int]) -> None:
    _, epoch = await read_versions("-")
    found = await asyncio.gather(
        *(routes.resolve("openai-gpt-4o", "paid", epoch=epoch) for _ in range(50))
    )
    assert {route.public_name for route in found} == {"openai-gpt-4o"}
    assert len(load_counter) == 1


async def test_saving_a_route_bumps_the_epoch_and_every_lookup_after_sees_it(
    load_counter: list[int],
) -> None:
    _, before = await read_versions("-")
    assert (await routes.resolve("openai-gpt-4o", "paid", epoch=before)).input_price_usd == 2.5

    def edit() -> None:
        route = ModelRoute.objects.get(public_name="openai-gpt-4o")
        route.input_price_usd = Decimal("2.75")
        route.save()

    await in_db_thread(edit)
    _, after = await read_versions("-")
    assert after > before
    route = await routes.resolve("openai-gpt-4o", "paid", epoch=after)
    assert route.input_price_usd == Decimal("2.75")
    assert len(load_counter) == 2


async def test_without_an_epoch_resolve_reads_it_and_sees_a_deleted_route_gone() -> None:
    assert (await routes.resolve("openai-gpt-4o", "paid")).provider == "openai"
    await in_db_thread(lambda: ModelRoute.objects.get(public_name="openai-gpt-4o").delete())
    with pytest.raises(routes.ModelNotFound):
        await routes.resolve("openai-gpt-4o", "paid")


def _everyone(route: routes.Route) -> bool:
    return True


async def test_models_for_a_tier_lists_only_what_it_may_use_in_openai_format() -> None:
    free = routes.models_payload(await routes.models_for_tier("free"), is_available=_everyone)
    paid = routes.models_payload(await routes.models_for_tier("paid"), is_available=_everyone)
    assert free["object"] == "list"
    assert [model["id"] for model in free["data"]] == [
        "deepseek-r1-distill-llama-70b",
        "llama3-8b-instruct",
        "llama3.3-70b-instruct",
        "openai-text-embedding-3-small",
    ]
    assert {model["id"]: model["kind"] for model in free["data"]} == {
        "deepseek-r1-distill-llama-70b": "chat",
        "llama3-8b-instruct": "chat",
        "llama3.3-70b-instruct": "chat",
        "openai-text-embedding-3-small": "embedding",
    }
    assert {model["id"] for model in paid["data"]} == set(SPEC_ROUTES)
    entry = next(m for m in paid["data"] if m["id"] == "anthropic-claude-4-sonnet")
    assert entry["object"] == "model"
    assert entry["owned_by"] == "anthropic"
    assert isinstance(entry["created"], int) and entry["created"] > 1_700_000_000


def test_the_admin_lists_filters_and_edits_routes(admin_client: Client) -> None:
    _, before = asyncio.run(read_versions("-"))
    listing = admin_client.get("/admin/gateway/modelroute/?provider__exact=digitalocean")
    assert listing.status_code == 200
    assert b"llama3-8b-instruct" in listing.content
    assert b"openai-gpt-5" not in listing.content

    route = ModelRoute.objects.get(public_name="openai-gpt-5")
    response = admin_client.post(
        f"/admin/gateway/modelroute/{route.pk}/change/",
        {
            "public_name": "openai-gpt-5",
            "provider": "openai",
            "provider_model": "gpt-5",
            "kind": "chat",
            "input_price_usd": "4.00",
            "output_price_usd": "15.00",
            "accepts_images": "on",
            "max_tokens_per_image": "2890",
            "is_paid_tier": "on",
            "is_enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    route.refresh_from_db()
    assert route.input_price_usd == Decimal("4")
    _, after = asyncio.run(read_versions("-"))
    assert after > before


def test_the_admin_refuses_a_route_that_takes_images_without_their_token_bound(
    admin_client: Client,
) -> None:
    route = ModelRoute.objects.get(public_name="llama3-8b-instruct")
    response = admin_client.post(
        f"/admin/gateway/modelroute/{route.pk}/change/",
        {
            "public_name": "llama3-8b-instruct",
            "provider": "digitalocean",
            "provider_model": "llama3-8b-instruct",
            "input_price_usd": "0.10",
            "output_price_usd": "0.10",
            "accepts_images": "on",
            "max_tokens_per_image": "0",
            "is_free_tier": "on",
            "is_paid_tier": "on",
            "is_enabled": "on",
        },
    )
    assert response.status_code == 200
    assert b"needs its max tokens per image" in response.content
    route.refresh_from_db()
    assert not route.accepts_images


def test_disabling_routes_from_the_admin_bumps_the_epoch(admin_client: Client) -> None:
    _, before = asyncio.run(read_versions("-"))
    ids = list(ModelRoute.objects.filter(provider="openai").values_list("pk", flat=True))
    response = admin_client.post(
        "/admin/gateway/modelroute/",
        {"action": "disable_routes", "_selected_action": ids},
    )
    assert response.status_code == 302
    assert not ModelRoute.objects.filter(provider="openai", is_enabled=True).exists()
    _, after = asyncio.run(read_versions("-"))
    assert after > before


def chat_body(
    model: str, max_tokens: str, messages: str = '[{"role": "user", "content": "x"}]'
) -> bytes:
    return f'{{"model": "{model}", "messages": {messages}, "max_tokens": {max_tokens}}}'.encode()


ORDER_CASES = {
    # Each body fails several checks; the first in SPEC's order answers.
    "malformed body with an unknown model": (
        chat_body("nope", "99999", messages="[]"),
        "free",
        (400, "invalid_request"),
    ),
    "boolean max_tokens on a paid model for free": (
        chat_body("openai-gpt-5", "true"),
        "free",
        (400, "invalid_request"),
    ),
    "unknown model above the cap": (
        chat_body("nope", "99999"),
        "free",
        (404, "model_not_found"),
    ),
    "paid model for free above the cap": (
        chat_body("openai-gpt-5", "99999"),
        "free",
        (403, "model_not_allowed"),
    ),
    "allowed model above the cap": (
        chat_body("llama3-8b-instruct", "99999"),
        "free",
        (400, "max_tokens_exceeded"),
    ),
}


@pytest.mark.parametrize(("raw", "tier", "expected"), ORDER_CASES.values(), ids=ORDER_CASES.keys())
async def test_checks_before_admission_answer_in_spec_order(
    raw: bytes, tier: Tier, expected: tuple[int, str]
) -> None:
    with pytest.raises(GatewayError) as caught:
        await prepare_chat(raw, tier)
    assert (caught.value.status, caught.value.code) == expected


async def test_a_prepared_chat_carries_its_route_and_the_tier_cap_when_none_was_asked(
    settings: Settings,
) -> None:
    settings.MAX_TOKENS = {"free": 512, "paid": 4096}
    prepared = await prepare_chat(
        b'{"model": "llama3-8b-instruct", "messages": [{"role": "user", "content": "x"}]}', "free"
    )
    assert prepared.route.provider == "digitalocean"
    assert prepared.max_tokens == 512
    assert prepared.request.max_tokens is None


def test_a_route_prices_tokens_with_its_own_prices_rounded_up_once() -> None:
    route = routes.Route(
        public_name="m",
        provider="openai",
        provider_model="m",
        input_price_usd=Decimal("0.15"),
        output_price_usd=Decimal("0.60"),
        tiers=frozenset({"free"}),
        created=0,
    )
    # 3 x 0.15 + 2 x 0.60 = 1.65 micro-dollars, rounded up to 2.
    assert route.cost_micro_usd(3, 2) == 2
    assert route.cost_micro_usd(1_000_000, 0) == 150_000
    assert route.cost_micro_usd(0, 1_000_000) == 600_000
