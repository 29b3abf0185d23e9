"""Fallback chains: how they expand, what is refused, and the two ways to set them
(``manage.py set_fallbacks`` and the admin)."""

from __future__ import annotations

import asyncio
import io
import itertools

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from gateway import fallbacks as chains
from gateway.core.store import read_versions
from gateway.models import ModelRoute
from gateway.proxy import routes
from tests.gateway.test_routes import seeded_routes  # noqa: F401  (autouse: the seeded table)

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = {name: "chat" for name in "abcdefghij"} | {"emb": "embedding"}


def test_a_chain_expands_depth_first_without_repeats_or_the_route_itself() -> None:
    fallbacks_of = {"a": ["b", "c"], "b": ["d", "a"], "c": ["d", "e"], "d": [], "e": ["b"]}
    assert chains.chain("a", fallbacks_of) == ("b", "d", "c", "e")
    assert chains.chain("d", fallbacks_of) == ()
    # A name no longer in the table (a deleted route) is skipped.
    assert chains.chain("x", {"x": ["gone", "d"], "d": []}) == ("d",)


def test_a_chain_is_cut_at_its_maximum_length() -> None:
    names = [f"r{i}" for i in range(20)]
    fallbacks_of = {name: [nxt] for name, nxt in itertools.pairwise(names)}
    fallbacks_of[names[-1]] = []
    assert chains.chain("r0", fallbacks_of) == tuple(names[1 : 1 + chains.MAX_CHAIN])


@pytest.mark.parametrize(
    ("name", "fallbacks", "current", "message"),
    [
        ("a", ["zz"], {}, "unknown model 'zz'"),
        ("zz", ["a"], {}, "unknown model 'zz'"),
        ("a", ["a"], {}, "'a' cannot fall back to itself"),
        ("a", ["emb"], {}, "'emb' serves embedding, not chat like 'a'"),
        ("a", ["b", "b"], {}, "a fallback is named twice"),
        ("a", ["b"], {"b": ["c"], "c": ["a"]}, "fallbacks would form a cycle: a -> b -> c -> a"),
    ],
)
def test_what_cannot_be_stored_is_refused_in_one_line(
    name: str, fallbacks: list[str], current: dict[str, list[str]], message: str
) -> None:
    fallbacks_of = {each: current.get(each, []) for each in KINDS}
    with pytest.raises(chains.FallbackError) as refused:
        chains.check(name, fallbacks, fallbacks_of, KINDS)
    assert str(refused.value) == message
    assert "\n" not in str(refused.value)


def test_a_chain_longer_than_the_maximum_is_refused_from_either_end() -> None:
    kinds = {f"r{i}": "chat" for i in range(chains.MAX_CHAIN + 2)}
    fallbacks_of: dict[str, list[str]] = {f"r{i}": [f"r{i + 1}"] for i in range(chains.MAX_CHAIN)}
    fallbacks_of |= {f"r{chains.MAX_CHAIN}": [], f"r{chains.MAX_CHAIN + 1}": []}
    # r0 already reaches MAX_CHAIN routes: one more at the far end is too many.
    with pytest.raises(chains.FallbackError, match="longer than"):
        chains.check(f"r{chains.MAX_CHAIN}", [f"r{chains.MAX_CHAIN + 1}"], fallbacks_of, kinds)
    chains.check(f"r{chains.MAX_CHAIN + 1}", ["r1"], fallbacks_of, kinds)  # r1.. is short enough


def set_fallbacks(*args: str) -> str:
    out = io.StringIO()
    call_command("set_fallbacks", *args, stdout=out)
    return out.getvalue().strip()


def test_set_fallbacks_stores_the_order_prints_the_chain_and_bumps_the_epoch() -> None:
    _, before = asyncio.run(read_versions("-"))
    assert set_fallbacks("llama3-8b-instruct", "deepseek-r1-distill-llama-70b") == (
        "llama3-8b-instruct -> deepseek-r1-distill-llama-70b"
    )
    printed = set_fallbacks("llama3.3-70b-instruct", "llama3-8b-instruct", "openai-gpt-4o")
    assert printed == (
        "llama3.3-70b-instruct -> llama3-8b-instruct -> deepseek-r1-distill-llama-70b"
        " -> openai-gpt-4o"
    )
    route = ModelRoute.objects.get(public_name="llama3.3-70b-instruct")
    assert route.fallbacks == ["llama3-8b-instruct", "openai-gpt-4o"]
    _, after = asyncio.run(read_versions("-"))
    assert after > before
    # The hot path's table carries the expanded chain.
    table = asyncio.run(routes.route_table(epoch=after))
    assert table["llama3.3-70b-instruct"].fallbacks == (
        "llama3-8b-instruct",
        "deepseek-r1-distill-llama-70b",
        "openai-gpt-4o",
    )
    assert set_fallbacks("llama3.3-70b-instruct") == "llama3.3-70b-instruct: no fallbacks"
    assert ModelRoute.objects.get(public_name="llama3.3-70b-instruct").fallbacks == []


def test_set_fallbacks_names_a_disabled_step_and_the_table_skips_it_for_requests() -> None:
    set_fallbacks("llama3.3-70b-instruct", "llama3-8b-instruct", "openai-gpt-4o")
    ModelRoute.objects.get(public_name="llama3-8b-instruct").save()  # an epoch bump
    off = ModelRoute.objects.get(public_name="llama3-8b-instruct")
    off.is_enabled = False
    off.save()
    printed = set_fallbacks("llama3.3-70b-instruct", "llama3-8b-instruct", "openai-gpt-4o")
    assert printed == (
        "llama3.3-70b-instruct -> llama3-8b-instruct (disabled: skipped) -> openai-gpt-4o"
    )
    _, epoch = asyncio.run(read_versions("-"))
    table = asyncio.run(routes.route_table(epoch=epoch))
    route = table["llama3.3-70b-instruct"]
    usable = asyncio.run(routes.fallbacks_for(route, "paid", epoch=epoch))
    assert [each.public_name for each in usable] == ["openai-gpt-4o"]
    # The free tier may not use openai-gpt-4o: it has no fallback left.
    assert asyncio.run(routes.fallbacks_for(route, "free", epoch=epoch)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-model", "llama3-8b-instruct"), "unknown model 'no-such-model'"),
        (("llama3-8b-instruct", "no-such-model"), "unknown model 'no-such-model'"),
        (("llama3-8b-instruct", "openai-text-embedding-3-small"), "serves embedding"),
    ],
)
def test_set_fallbacks_refuses_unknown_models_and_other_kinds(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        set_fallbacks(*args)
    assert ModelRoute.objects.get(public_name="llama3-8b-instruct").fallbacks == []


def test_set_fallbacks_refuses_a_cycle_and_leaves_the_chain_as_it_was() -> None:
    set_fallbacks("llama3-8b-instruct", "llama3.3-70b-instruct")
    with pytest.raises(CommandError) as refused:
        set_fallbacks("llama3.3-70b-instruct", "llama3-8b-instruct")
    assert str(refused.value) == (
        "fallbacks would form a cycle: "
        "llama3.3-70b-instruct -> llama3-8b-instruct -> llama3.3-70b-instruct"
    )
    assert ModelRoute.objects.get(public_name="llama3.3-70b-instruct").fallbacks == []


def route_form(route: ModelRoute, fallbacks: str) -> dict[str, str]:
    return {
        "public_name": route.public_name,
        "provider": route.provider,
        "provider_model": route.provider_model,
        "kind": route.kind,
        "input_price_usd": str(route.input_price_usd),
        "output_price_usd": str(route.output_price_usd),
        "max_tokens_per_image": str(route.max_tokens_per_image),
        "fallbacks": fallbacks,
        "is_free_tier": "on",
        "is_paid_tier": "on",
        "is_enabled": "on",
    }


def test_the_admin_edits_fallbacks_as_names_in_order_and_refuses_a_cycle(
    admin_client: Client,
) -> None:
    route = ModelRoute.objects.get(public_name="llama3.3-70b-instruct")
    url = f"/admin/gateway/modelroute/{route.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200 and b'name="fallbacks"' in page.content
    response = admin_client.post(url, route_form(route, " llama3-8b-instruct , openai-gpt-4o"))
    assert response.status_code == 302, response.content[:2000]
    route.refresh_from_db()
    assert route.fallbacks == ["llama3-8b-instruct", "openai-gpt-4o"]
    listing = admin_client.get("/admin/gateway/modelroute/")
    assert "llama3-8b-instruct → openai-gpt-4o" in listing.content.decode()

    other = ModelRoute.objects.get(public_name="llama3-8b-instruct")
    response = admin_client.post(
        f"/admin/gateway/modelroute/{other.pk}/change/", route_form(other, "llama3.3-70b-instruct")
    )
    assert response.status_code == 200  # the form again, with the error
    assert b"fallbacks would form a cycle" in response.content
    other.refresh_from_db()
    assert other.fallbacks == []
