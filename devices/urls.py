from __future__ import annotations

from django.urls import path

from devices import views

app_name = "devices"

urlpatterns = [
    path("register", views.register, name="register"),
    path("me", views.me, name="me"),
]
