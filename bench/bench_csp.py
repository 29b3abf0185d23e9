"""Benchmark (not a test): the gateway's CSP middleware vs django-csp 4's ``CSPMiddleware``.

    /tmp/libs-venv/bin/python bench/bench_csp.py [--calls N] [--rounds R]

``gateway/staff/security.py`` sets one fixed Content-Security-Policy on
every response Django renders (admin, dashboard, the JSON views outside the
lean hot path). django-csp 4 would do it from a ``CONTENT_SECURITY_POLICY``
setting. This checks that the same policy, written as django-csp settings,
gives the same directives (django-csp 4.0 builds the header from a set, so
their order changes from one process to the next), then times one response through each
middleware alone (an async view behind it, as under uvicorn, and a sync
one, as in the test client and WSGI): django-csp's middleware is a
``MiddlewareMixin``, which on an async stack runs ``process_request`` and
``process_response`` through ``sync_to_async`` (two hops to the thread
Django keeps for sync code), where the gateway's ``HybridMiddleware`` runs
in place. Figures: microseconds per response, median of ``--rounds`` runs.

Needs ``django-csp`` (not in requirements*.txt); without it the script says
so and exits with status 0 having measured nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script (``python bench/bench_csp.py``): the project's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.libraries import embedded_django, medians, parser, per_item, skipped

try:
    import csp
    from csp.constants import NONE, SELF
except ImportError:
    csp = None


def configure() -> None:
    embedded_django("bench-csp")
    from django.conf import settings

    # The gateway's policy (gateway/staff/security.py), as django-csp settings.
    settings.CONTENT_SECURITY_POLICY = {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF],
            "style-src": [SELF],
            "img-src": [SELF, "data:"],
            "frame-ancestors": [NONE],
            "form-action": [SELF],
            "base-uri": [NONE],
        }
    }


def chains() -> dict[str, tuple[Any, Any]]:
    """name -> (middleware over an async view, middleware over a sync view)."""
    from csp.middleware import CSPMiddleware
    from django.http import HttpResponse

    from gateway.staff.security import ContentSecurityPolicyMiddleware

    async def async_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    def sync_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    return {
        "gateway ContentSecurityPolicyMiddleware": (
            ContentSecurityPolicyMiddleware(async_view),
            ContentSecurityPolicyMiddleware(sync_view),
        ),
        "django-csp CSPMiddleware": (CSPMiddleware(async_view), CSPMiddleware(sync_view)),
    }


async def async_run(middleware: Any, requests: list[Any]) -> None:
    for request in requests:
        await middleware(request)


def sync_run(middleware: Any, requests: list[Any]) -> None:
    for request in requests:
        middleware(request)


def main() -> int:
    command_line = parser(__doc__, rounds=7)
    command_line.add_argument("--calls", type=int, default=5_000)
    arguments = command_line.parse_args()
    if csp is None:
        return skipped("bench_csp", "django-csp")
    configure()
    from importlib.metadata import version

    from django.test import RequestFactory

    factory = RequestFactory()
    variants = chains()
    headers = {}
    for name, (_, sync_chain) in variants.items():
        headers[name] = sync_chain(factory.get("/admin/login/"))["Content-Security-Policy"]
    exact = len(set(headers.values())) == 1
    directives = len({frozenset(header.split("; ")) for header in headers.values()}) == 1
    print(
        f"django-csp {version('django-csp')}, Django {version('django')}; "
        f"same directives: {directives}, same header text: {exact}"
    )
    for name, header in headers.items():
        print(f"  {name}: {header}")
    loop = asyncio.new_event_loop()

    def on_async(middleware: Any) -> Callable[[], float]:
        def measure() -> float:
            requests = [factory.get("/admin/login/") for _ in range(arguments.calls)]
            run = async_run(middleware, requests)
            return per_item(lambda: loop.run_until_complete(run), len(requests))

        return measure

    def on_sync(middleware: Any) -> Callable[[], float]:
        def measure() -> float:
            requests = [factory.get("/admin/login/") for _ in range(arguments.calls)]
            return per_item(lambda: sync_run(middleware, requests), len(requests))

        return measure

    measures: dict[tuple[str, str], Callable[[], float]] = {}
    for name, (async_chain, sync_chain) in variants.items():
        measures[name, "async"] = on_async(async_chain)
        measures[name, "sync"] = on_sync(sync_chain)
    results = medians(arguments.rounds, measures)
    loop.close()
    print(f"us per response, median of {arguments.rounds} x {arguments.calls:,}:")
    for name in variants:
        cells = []
        for stack in ("async", "sync"):
            value = results[name, stack]
            ratio = value / results["gateway ContentSecurityPolicyMiddleware", stack]
            cells.append(f"{stack} {value:7.1f} us ({ratio:5.1f} x)")
        print(f"  {name:<40}" + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
