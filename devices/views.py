"""Client endpoints under /v1/devices/ (async Django views)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from devices.auth import DeviceRequest, device_required
from devices.services import device_register, has_control_characters
from gateway.core.client_ip import client_ip_from_request
from gateway.core.db import run_sync
from gateway.core.errors import InvalidRequest, UnsupportedMediaType
from gateway.core.jsonbody import parse_json_body
from usage import guard

REGISTRATION_FIELDS = {"deviceName": "name", "platform": "platform", "version": "version"}
MAX_FIELD_LENGTH = 255
REGISTERED_MESSAGE = (
    "Device registered and waiting for an administrator's approval. Keep the session "
    "token safe: it is shown only once."
)


# No cookie authenticates it, so CSRF tokens protect nothing here; what keeps a
# web page from registering devices through its visitors' browsers is the
# JSON-only body (_json_object).
@csrf_exempt
@require_POST
async def register(request: HttpRequest) -> JsonResponse:
    ip = client_ip_from_request(request)
    await guard.check_ip(ip)
    # Bad input is refused before the registration is counted against the IP.
    fields = _registration_fields(_json_object(request))
    await guard.admit_registration(ip)
    device, token = await run_sync(device_register, ip=ip, **fields)
    return JsonResponse(
        {
            "deviceId": device.pk,
            "sessionToken": token,
            "status": device.status,
            "message": REGISTERED_MESSAGE,
        },
        status=201,
    )


@require_GET
@device_required
async def me(request: DeviceRequest) -> JsonResponse:
    """The calling device's own record (not in SPEC: a cheap authenticated probe)."""
    device = request.device
    return JsonResponse({"id": device.id, "status": device.status, "tier": device.tier})


def _json_object(request: HttpRequest) -> dict[str, Any]:
    # A page on another origin can make a browser send text/plain, form or
    # multipart bodies without a CORS preflight, but never application/json.
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    # The body is at most MAX_REQUEST_BYTES: gateway.proxy.bodies refused a larger one.
    data = parse_json_body(request.body)
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return data


def _registration_fields(data: dict[str, Any]) -> dict[str, str]:
    """The three fields, strictly checked; any other field is ignored."""
    fields = {}
    for key, name in REGISTRATION_FIELDS.items():
        value = data.get(key)
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= MAX_FIELD_LENGTH
            or has_control_characters(value)
        ):
            raise InvalidRequest(
                f"{key} must be a string of 1 to {MAX_FIELD_LENGTH} printable characters",
                param=key,
            )
        fields[name] = value
    return fields
