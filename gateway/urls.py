from __future__ import annotations

from django.contrib import admin
from django.urls import path

from gateway import health

urlpatterns = [
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("admin/", admin.site.urls),
]
