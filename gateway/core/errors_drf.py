"""DRF's exception handler, rendering every API error as OpenAI's error object."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from gateway.core.errors import GatewayError, error_payload
from gateway.core.logs import request_id_var

_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.ParseError: "invalid_request",
    exceptions.ValidationError: "invalid_request",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limit_exceeded",
}


def _validation_message(detail: Any) -> str:
    if isinstance(detail, dict):
        field, problems = next(iter(detail.items()))
        return f"{field}: {_validation_message(problems)}"
    if isinstance(detail, list) and detail:
        return _validation_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, GatewayError):
        response = Response(exc.payload(), status=exc.status, headers=exc.headers())
        response.error_code = exc.code  # type: ignore[attr-defined]
    else:
        if isinstance(exc, Http404):
            exc = exceptions.NotFound()
        elif isinstance(exc, DjangoPermissionDenied):
            exc = exceptions.PermissionDenied()
        if not isinstance(exc, exceptions.APIException):
            return None  # a real bug: ApiErrorMiddleware logs it and answers 500
        code = next(
            (code for kind, code in _DRF_CODES.items() if isinstance(exc, kind)), "invalid_request"
        )
        # A session without login is a 403 for DRF; we follow SPEC's 401 type.
        status = 401 if isinstance(exc, exceptions.NotAuthenticated) else exc.status_code
        if isinstance(exc, exceptions.ValidationError):
            message = _validation_message(exc.detail)
        else:
            message = str(exc.detail)
        response = Response(error_payload(status, code, message), status=status)
        response.error_code = code  # type: ignore[attr-defined]
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            response["Retry-After"] = str(max(1, int(wait)))
    response.gateway_error = True  # type: ignore[attr-defined]
    request_id = request_id_var.get()
    if request_id:
        response["X-Request-ID"] = request_id
    return response
