"""Views that misbehave on purpose, mounted only by the error-rendering tests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_POST

from gateway.core.errors import RateLimited


def explode(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("database password hunter2 and key sk-live-abcdefghijklmnop")


def limited(request: HttpRequest) -> HttpResponse:
    raise RateLimited("Device rate limit exceeded", retry_after=30, limit=100, window="24 hours")


@require_POST
def post_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("v1/explode", explode),
    path("api/explode", explode),
    path("v1/limited", limited),
    path("v1/post-only", post_only),
    path("", include("gateway.urls")),
]
