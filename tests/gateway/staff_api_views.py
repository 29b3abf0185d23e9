"""A tiny DRF API guarded by IsVerifiedStaff, mounted only by its tests."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.core.permissions import IsVerifiedStaff


class StaffOnly(APIView):
    permission_classes = [IsVerifiedStaff]

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.get_username()})

    def post(self, request: Request) -> Response:
        return Response({"done": True})


class DefaultPermission(APIView):
    """No permission_classes: the project's default must be just as strict."""

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [
    path("api/admin/staff-only", StaffOnly.as_view()),
    path("api/admin/default", DefaultPermission.as_view()),
    path("", include("gateway.urls")),
]
