from __future__ import annotations

from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("devices/<str:device_id>/approve", views.approve, name="approve"),
    path("devices/<str:device_id>/reject", views.reject, name="reject"),
    path("pause", views.pause, name="pause"),
    path("resume", views.resume, name="resume"),
]
