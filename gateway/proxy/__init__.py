"""The client API: the lean ASGI hot path, providers, upstream calls,
settlement, the low-volume /v1 views. Nothing imports it."""
