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

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import services
from devices.models import Device
from devices.selectors import device_detail, device_get, device_list
from gateway.core.errors import PermissionDenied
from gateway.core.permissions import CHANGE_DEVICES, VIEW_DEVICES
from usage.ipguard import client_ip_from_request


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


class DeviceApproveApi(APIView):
    required_ability = CHANGE_DEVICES

    @extend_schema_serializer(component_name="DeviceApproval")
    class InputSerializer(serializers.Serializer[Any]):
        tier = serializers.ChoiceField(choices=Device.Tier.choices, required=False)
        user = serializers.CharField(required=False, max_length=services.MAX_OWNER_NAME_LENGTH)

    OutputSerializer = DeviceOutputSerializer

    @extend_schema(
        operation_id="admin_devices_approve",
        tags=["admin"],
        request=InputSerializer,
        responses=DeviceOutputSerializer,
    )
    def post(self, request: Request, device_id: str) -> Response:
        data = _validated(self.InputSerializer, request.data)
        device = services.device_approve(
            device=device_get(device_id),
            actor=_actor(request),
            ip=client_ip_from_request(request),
            tier=data.get("tier"),
            owner_name=data.get("user"),
        )
        return Response(self.OutputSerializer(device).data)


class DeviceRejectApi(APIView):
    required_ability = CHANGE_DEVICES

    OutputSerializer = DeviceOutputSerializer

    @extend_schema(
        operation_id="admin_devices_reject",
        tags=["admin"],
        request=None,
        responses=DeviceOutputSerializer,
    )
    def post(self, request: Request, device_id: str) -> Response:
        device = services.device_reject(
            device=device_get(device_id),
            actor=_actor(request),
            ip=client_ip_from_request(request),
        )
        return Response(self.OutputSerializer(device).data)


class DeviceRevokeApi(APIView):
    required_ability = CHANGE_DEVICES

    OutputSerializer = DeviceOutputSerializer

    @extend_schema(
        operation_id="admin_devices_revoke",
        tags=["admin"],
        request=None,
        responses=DeviceOutputSerializer,
    )
    def post(self, request: Request, device_id: str) -> Response:
        device = services.device_revoke(
            device=device_get(device_id),
            actor=_actor(request),
            ip=client_ip_from_request(request),
        )
        return Response(self.OutputSerializer(device).data)


class DeviceSuspendApi(APIView):
    required_ability = CHANGE_DEVICES

    @extend_schema_serializer(component_name="DeviceSuspension")
    class InputSerializer(serializers.Serializer[Any]):
        # Positivity and the upper bound are the service's rules (one place).
        hours = serializers.FloatField()
        reason = serializers.CharField(max_length=services.MAX_REASON_LENGTH)

    OutputSerializer = DeviceOutputSerializer

    @extend_schema(
        operation_id="admin_devices_suspend",
        tags=["admin"],
        request=InputSerializer,
        responses=DeviceOutputSerializer,
    )
    def post(self, request: Request, device_id: str) -> Response:
        data = _validated(self.InputSerializer, request.data)
        device = services.device_suspend(
            device=device_get(device_id),
            actor=_actor(request),
            ip=client_ip_from_request(request),
            hours=data["hours"],
            reason=data["reason"],
        )
        return Response(self.OutputSerializer(device).data)
