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

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import csp
    from csp.constants import NONE, SELF
except ImportError:
    csp = None


def configure() -> None:
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["SECRET_KEY"] = "bench-only"
    os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="bench-csp-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
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


async def async_run(middleware: Any, requests: list[Any]) -> float:
    started = time.perf_counter()
    for request in requests:
        await middleware(request)
    return (time.perf_counter() - started) * 1e6 / len(requests)


def sync_run(middleware: Any, requests: list[Any]) -> float:
    started = time.perf_counter()
    for request in requests:
        middleware(request)
    return (time.perf_counter() - started) * 1e6 / len(requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    if csp is None:
        print("bench_csp: skipped, django-csp is not installed", file=sys.stderr)
        return 0
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
    results: dict[str, dict[str, list[float]]] = {
        name: {"async": [], "sync": []} for name in variants
    }
    loop = asyncio.new_event_loop()
    for _ in range(arguments.rounds):
        for name, (async_chain, sync_chain) in variants.items():
            requests = [factory.get("/admin/login/") for _ in range(arguments.calls)]
            results[name]["async"].append(loop.run_until_complete(async_run(async_chain, requests)))
            requests = [factory.get("/admin/login/") for _ in range(arguments.calls)]
            results[name]["sync"].append(sync_run(sync_chain, requests))
    loop.close()
    base = results["gateway ContentSecurityPolicyMiddleware"]
    print(f"us per response, median of {arguments.rounds} x {arguments.calls:,}:")
    for name, runs in results.items():
        cells = []
        for stack in ("async", "sync"):
            value = statistics.median(runs[stack])
            ratio = value / statistics.median(base[stack])
            cells.append(f"{stack} {value:7.1f} us ({ratio:5.1f} x)")
        print(f"  {name:<40}" + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
