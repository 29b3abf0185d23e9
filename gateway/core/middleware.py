"""Django middleware: request ids and access lines, and JSON errors on API paths."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from gateway.core import metrics
from gateway.core.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    ServiceUnavailable,
    error_for_status,
)
from gateway.core.logs import log_request, new_request_id, request_id_var

logger = logging.getLogger("gateway.core.errors")

API_PREFIXES = ("/v1/", "/api/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in ("/v1", "/api")


def error_response(error: GatewayError) -> JsonResponse:
    response = JsonResponse(error.payload(), status=error.status)
    for name, value in error.headers().items():
        response[name] = value
    response.gateway_error = True  # type: ignore[attr-defined]
    response.error_code = error.code  # type: ignore[attr-defined]
    return response


class HybridMiddleware:
    """Works in both sync and async stacks without a thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        state = self.before(request)
        return self.after(request, self.get_response(request), state)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        state = self.before(request)
        response = await self.get_response(request)
        return self.after(request, response, state)

    def before(self, request: HttpRequest) -> Any:
        return None

    def after(
        self, request: HttpRequest, response: HttpResponseBase, state: Any
    ) -> HttpResponseBase:
        return response


class RequestContextMiddleware(HybridMiddleware):
    """Gives every request an id (in the response and every log line) and logs one line."""

    def before(self, request: HttpRequest) -> Any:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        return (token, time.monotonic())

    def after(
        self, request: HttpRequest, response: HttpResponseBase, state: Any
    ) -> HttpResponseBase:
        token, started = state
        request_id = request.request_id  # type: ignore[attr-defined]
        response["X-Request-ID"] = request_id
        duration = time.monotonic() - started
        device = getattr(request, "device", None)
        fields: dict[str, Any] = {
            "code": getattr(response, "error_code", None),
            "device_id": getattr(device, "id", None),
        }
        metrics.observe_request(request.path, response.status_code, fields, duration)
        log_request(
            request_id=request_id,
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(duration * 1000, 1),
            **fields,
        )
        request_id_var.reset(token)
        return response


class ApiErrorMiddleware(HybridMiddleware):
    """On /v1 and /api paths every error is OpenAI's JSON error object.

    Views raise GatewayError; Django's own 404/405/500 (URL not found, wrong
    method, an exception in another middleware) arrive here as HTML responses
    and are replaced. A 500 never carries the exception text or a traceback,
    only the request id to quote to the operator.
    """

    def after(
        self, request: HttpRequest, response: HttpResponseBase, state: Any
    ) -> HttpResponseBase:
        if response.status_code < 400 or not is_api_path(request.path):
            return response
        if getattr(response, "gateway_error", False):
            return response
        error = error_for_status(response.status_code)
        if response.status_code >= 500:
            error = _internal_error(request)
        replacement = error_response(error)
        if response.status_code == 405 and response.has_header("Allow"):
            replacement["Allow"] = response["Allow"]
        return replacement

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        error: GatewayError
        if isinstance(exception, GatewayError):
            error = exception
        elif isinstance(exception, Http404):
            error = NotFound()
        elif isinstance(exception, DjangoPermissionDenied):
            error = PermissionDenied()
        elif isinstance(exception, RequestDataTooBig):
            error = RequestTooLarge()
        elif isinstance(exception, SuspiciousOperation):
            error = InvalidRequest()
        elif isinstance(exception, OperationalError | InterfaceError):
            # The database is unreachable (SPEC: a 503 with Retry-After, never a 500).
            logger.warning("database unavailable on %s", request.path)
            error = ServiceUnavailable(retry_after=5)
        else:
            logger.error("Unhandled exception on %s", request.path, exc_info=exception)
            error = _internal_error(request)
        return error_response(error)


def _internal_error(request: HttpRequest) -> InternalError:
    request_id = getattr(request, "request_id", None) or request_id_var.get() or "-"
    return InternalError(f"Internal server error (request id {request_id})", requestId=request_id)
