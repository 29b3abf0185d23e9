"""Fallback chains: which routes a request may reach when its own route fails.

A route names its fallbacks (public model names), in order; each fallback's
own fallbacks follow it, depth first, so ``a -> [b]`` and ``b -> [c]`` give
``a``'s chain ``b, c``. A route reached twice is tried once. A cycle (a
route that falls back, through any path, to itself) is refused when the
fallbacks are set (admin, ``set_fallbacks``), so a stored chain always ends.

Pure functions over a ``{name: fallbacks}`` mapping: ``gateway.models``
validates with them and ``gateway.proxy.routes`` expands each route's chain
once per route table load, never per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# A chain longer than this is a configuration mistake, not resilience: each
# step may cost a full upstream timeout.
MAX_CHAIN = 8


class FallbackError(ValueError):
    """Fallbacks that cannot be stored: the message says why, in one line."""


def chain(name: str, fallbacks_of: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """``name``'s fallbacks, expanded depth first, without repeats or ``name`` itself.

    Unknown names are skipped (a route deleted since); cycles end where they
    would repeat; at most MAX_CHAIN.
    """
    return _expand(name, fallbacks_of)[:MAX_CHAIN]


def _expand(name: str, fallbacks_of: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    seen = {name}
    order: list[str] = []

    def visit(current: str) -> None:
        for fallback in fallbacks_of.get(current, ()):
            if fallback in seen or fallback not in fallbacks_of:
                continue
            seen.add(fallback)
            order.append(fallback)
            visit(fallback)

    visit(name)
    return tuple(order)


def check(
    name: str,
    fallbacks: Sequence[str],
    fallbacks_of: Mapping[str, Sequence[str]],
    kinds: Mapping[str, str],
) -> None:
    """FallbackError unless ``name`` may fall back to ``fallbacks``, given every route's
    current fallbacks (``fallbacks_of``) and kinds."""
    if name not in kinds:
        raise FallbackError(f"unknown model {name[:100]!r}")
    for fallback in fallbacks:
        if fallback not in kinds:
            raise FallbackError(f"unknown model {fallback[:100]!r}")
        if fallback == name:
            raise FallbackError(f"{name!r} cannot fall back to itself")
        if kinds[fallback] != kinds[name]:
            raise FallbackError(
                f"{fallback!r} serves {kinds[fallback]}, not {kinds[name]} like {name!r}"
            )
    if len(set(fallbacks)) != len(fallbacks):
        raise FallbackError("a fallback is named twice")
    proposed = {**fallbacks_of, name: list(fallbacks)}
    cycle = _cycle_through(name, proposed)
    if cycle:
        raise FallbackError("fallbacks would form a cycle: " + " -> ".join(cycle))
    if any(len(_expand(other, proposed)) > MAX_CHAIN for other in proposed):
        raise FallbackError(f"a fallback chain would be longer than {MAX_CHAIN} models")


def _cycle_through(start: str, fallbacks_of: Mapping[str, Sequence[str]]) -> list[str]:
    """A path from ``start`` back to ``start``, or [] when there is none."""
    path: list[str] = [start]
    visited: set[str] = set()

    def walk(current: str) -> bool:
        for fallback in fallbacks_of.get(current, ()):
            if fallback == start:
                path.append(fallback)
                return True
            if fallback in visited or fallback not in fallbacks_of:
                continue
            visited.add(fallback)
            path.append(fallback)
            if walk(fallback):
                return True
            path.pop()
        return False

    return path if walk(start) else []
