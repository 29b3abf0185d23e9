from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from gateway.proxy import health, openapi, views

urlpatterns = [
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("openapi.json", openapi.openapi_json, name="openapi"),
    path("v1/devices/", include("devices.urls")),
    path("v1/usage/stats", views.usage_stats_view, name="usage-stats"),
    path("api/admin/", include("devices.api_urls")),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
]
