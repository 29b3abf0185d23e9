"""One error type for the whole gateway, rendered as OpenAI's error object.

Every refusal the client can see is a ``GatewayError`` (or subclass) carrying
its HTTP status, a stable ``code``, a safe message and optional extra fields
and headers. It is rendered in exactly one place (``error_payload``), used by
the lean ASGI handler, the Django middleware and DRF's exception handler.
Never build a message from ``str(exc)`` of a foreign exception: it may carry
a key or an upstream body.
"""

from __future__ import annotations

from typing import Any

STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "service_unavailable_error",
    504: "api_error",
}


def error_type_for(status: int) -> str:
    if status in STATUS_TYPES:
        return STATUS_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


class GatewayError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = message or self.message
        self.retry_after = retry_after
        self.extra_headers = dict(headers or {})
        self.extra = extra
        super().__init__(self.detail)

    @property
    def error_type(self) -> str:
        return error_type_for(self.status)

    def payload(self) -> dict[str, Any]:
        return error_payload(self.status, self.code, self.detail, **self.extra)

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(self.retry_after)))
        return headers


def error_payload(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": error_type_for(status), "code": code}
    error.update({key: value for key, value in extra.items() if value is not None})
    return {"error": error}


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"
    message = "Invalid request"


class RequestTooLarge(GatewayError):
    status = 413
    code = "request_too_large"
    message = "Request body too large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"
    message = "Content-Type must be application/json"


class RequestTimeout(GatewayError):
    status = 408
    code = "request_timeout"
    message = "The request body did not arrive in time"


class AuthenticationFailed(GatewayError):
    status = 401
    code = "invalid_credentials"
    # One generic message whatever the reason, so a caller cannot probe which
    # part of its credentials was wrong.
    message = "Invalid or missing device credentials"


class PermissionDenied(GatewayError):
    status = 403
    code = "permission_denied"
    message = "You do not have permission to perform this action"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    message = "Not found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    message = "Method not allowed"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"
    message = "Rate limit exceeded"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"
    message = "Service temporarily unavailable, retry later"


class InternalError(GatewayError):
    status = 500
    code = "internal_error"
    message = "Internal server error"


def error_for_status(status: int) -> GatewayError:
    """The generic error for a status produced outside our code (404, 405, 500...)."""
    generic: dict[int, type[GatewayError]] = {
        400: InvalidRequest,
        401: AuthenticationFailed,
        403: PermissionDenied,
        404: NotFound,
        405: MethodNotAllowed,
        413: RequestTooLarge,
        415: UnsupportedMediaType,
        429: RateLimited,
        503: ServiceUnavailable,
    }
    if status in generic:
        return generic[status]()
    error = GatewayError() if status >= 500 else InvalidRequest()
    error.status = status
    return error
