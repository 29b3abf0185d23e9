from __future__ import annotations

from django.contrib import admin

from usage.models import BlockedNetwork


@admin.register(BlockedNetwork)
class BlockedNetworkAdmin(admin.ModelAdmin):
    list_display = ["cidr", "reason", "created_at"]
    search_fields = ["cidr", "reason"]
    readonly_fields = ["created_at"]
