"""``GET /metrics``: the Prometheus scrape, for the socket peers in ``METRICS_ALLOWED_IPS``.

A request carrying a forwarding header is refused: ``/metrics`` is for the
scraper on the host or the compose network, never for anything relayed.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.core.errors import PermissionDenied
from gateway.core.metrics import render
from gateway.proxy.lean import LeanRequest, Response, lean_endpoint

_PROXY_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")


def _peer_allowed(request: LeanRequest) -> bool:
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    client = request.scope.get("client")
    if not client:
        return False
    try:
        peer = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(
        peer in ipaddress.ip_network(cidr, strict=False) for cidr in settings.METRICS_ALLOWED_IPS
    )


@lean_endpoint("GET")
async def metrics_endpoint(request: LeanRequest) -> Response:
    if not _peer_allowed(request):
        raise PermissionDenied("Metrics are not available from this address")
    return Response(200, await render(), content_type=CONTENT_TYPE_LATEST.encode())
