from __future__ import annotations

from django.urls import path

from devices import api

app_name = "devices-api"

urlpatterns = [
    path("devices", api.DeviceListApi.as_view(), name="list"),
    path("devices/<str:device_id>/approve", api.DeviceApproveApi.as_view(), name="approve"),
    path("devices/<str:device_id>/reject", api.DeviceRejectApi.as_view(), name="reject"),
    path("devices/<str:device_id>/revoke", api.DeviceRevokeApi.as_view(), name="revoke"),
    path("devices/<str:device_id>/suspend", api.DeviceSuspendApi.as_view(), name="suspend"),
]
