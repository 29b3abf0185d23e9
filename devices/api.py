"""Staff-only JSON API for devices (SPEC section 3): one view per operation.

Authentication is the admin's session (with its CSRF protection on writes),
permission ``gateway.core.permissions.IsVerifiedStaff``: both come from
REST_FRAMEWORK's defaults. Each view names the ability it needs
(``required_ability``): the list needs the device model's view or change
permission, every action its change permission, as in the Django admin.
Errors are OpenAI-shaped by ``gateway.core.errors_drf``: 404 unknown device, 409
illegal transition, 400 bad input, 401/403 not staff or not permitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import services
from devices.models import Device
from devices.selectors import device_detail, device_get, device_list
from gateway.core.client_ip import client_ip_from_request
from gateway.core.errors import PermissionDenied
from gateway.core.permissions import CHANGE_DEVICES, VIEW_DEVICES


@extend_schema_serializer(component_name="Device")
class DeviceOutputSerializer(serializers.Serializer[Any]):
    """A device as the admin API shows it.

    ``device_detail`` builds the answer; the fields (camelCase, the JSON
    names) are declared only so the OpenAPI description shows them.
    """

    id = serializers.CharField()
    name = serializers.CharField()
    platform = serializers.CharField()
    status = serializers.ChoiceField(choices=Device.Status.choices)
    tier = serializers.ChoiceField(choices=Device.Tier.choices)
    user = serializers.CharField(allow_null=True, help_text="The owning account's name.")
    ip = serializers.CharField(help_text="Last seen from, else registered from.")
    lastSeenAt = serializers.DateTimeField(allow_null=True)
    version = serializers.CharField()
    registrationIp = serializers.CharField()
    tokenPrefix = serializers.CharField()
    createdAt = serializers.DateTimeField()
    approvedAt = serializers.DateTimeField(allow_null=True)
    suspendedUntil = serializers.DateTimeField(allow_null=True)
    suspensionReason = serializers.CharField(allow_null=True)

    def to_representation(self, instance: Device) -> dict[str, Any]:
        return device_detail(instance)


# The list's envelope, for the OpenAPI description only.
DEVICE_LIST = inline_serializer(
    name="DeviceList",
    fields={
        "object": serializers.ChoiceField(choices=["list"]),
        "data": DeviceOutputSerializer(many=True),
    },
)


def _validated(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _actor(request: Request) -> AbstractBaseUser:
    if not isinstance(request.user, AbstractBaseUser):  # IsVerifiedStaff already ensured it
        raise PermissionDenied()
    return request.user


class DeviceListApi(APIView):
    required_ability = VIEW_DEVICES

    @extend_schema_serializer(component_name="DeviceListQuery")
    class InputSerializer(serializers.Serializer[Any]):
        status = serializers.ChoiceField(choices=Device.Status.choices, required=False)

    OutputSerializer = DeviceOutputSerializer

    @extend_schema(
        operation_id="admin_devices_list",
        tags=["admin"],
        parameters=[InputSerializer],
        responses=DEVICE_LIST,
    )
    def get(self, request: Request) -> Response:
        filters = _validated(self.InputSerializer, request.query_params)
        devices = device_list(status=filters.get("status"))
        return Response({"object": "list", "data": self.OutputSerializer(devices, many=True).data})


_View = TypeVar("_View", bound=Callable[..., Any])


def _action_schema(
    name: str, request: type[serializers.Serializer[Any]] | None = None
) -> Callable[[_View], _View]:
    """The OpenAPI description of a device action, whose answer is the device."""
    return extend_schema(
        operation_id=f"admin_devices_{name}",
        tags=["admin"],
        request=request,
        responses=DeviceOutputSerializer,
    )


# One transition of one device: its change permission, the device as the answer.
# (No docstring: drf-spectacular would publish it as every action's description.)
class _DeviceActionApi(APIView):
    required_ability = CHANGE_DEVICES

    OutputSerializer = DeviceOutputSerializer

    def _act(
        self, request: Request, device_id: str, action: Callable[..., Device], **fields: Any
    ) -> Response:
        device = action(
            device=device_get(device_id),
            actor=_actor(request),
            ip=client_ip_from_request(request),
            **fields,
        )
        return Response(self.OutputSerializer(device).data)


class DeviceApproveApi(_DeviceActionApi):
    @extend_schema_serializer(component_name="DeviceApproval")
    class InputSerializer(serializers.Serializer[Any]):
        tier = serializers.ChoiceField(choices=Device.Tier.choices, required=False)
        user = serializers.CharField(required=False, max_length=services.MAX_OWNER_NAME_LENGTH)

    @_action_schema("approve", InputSerializer)
    def post(self, request: Request, device_id: str) -> Response:
        data = _validated(self.InputSerializer, request.data)
        return self._act(
            request,
            device_id,
            services.device_approve,
            tier=data.get("tier"),
            owner_name=data.get("user"),
        )


class DeviceRejectApi(_DeviceActionApi):
    @_action_schema("reject")
    def post(self, request: Request, device_id: str) -> Response:
        return self._act(request, device_id, services.device_reject)


class DeviceRevokeApi(_DeviceActionApi):
    @_action_schema("revoke")
    def post(self, request: Request, device_id: str) -> Response:
        return self._act(request, device_id, services.device_revoke)


class DeviceSuspendApi(_DeviceActionApi):
    @extend_schema_serializer(component_name="DeviceSuspension")
    class InputSerializer(serializers.Serializer[Any]):
        # Positivity and the upper bound are the service's rules (one place).
        hours = serializers.FloatField()
        reason = serializers.CharField(max_length=services.MAX_REASON_LENGTH)

    @_action_schema("suspend", InputSerializer)
    def post(self, request: Request, device_id: str) -> Response:
        data = _validated(self.InputSerializer, request.data)
        return self._act(
            request, device_id, services.device_suspend, hours=data["hours"], reason=data["reason"]
        )
