from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction

from gateway import fallbacks as chains
from gateway.core.store import bump_epoch


class ModelRoute(models.Model):
    """A public model name clients ask for, and where and at what price it is served.

    Editable in the admin; the hot path never reads this table directly but a
    per-process copy (``gateway.proxy.routes``) that every save invalidates.
    """

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        DIGITALOCEAN = "digitalocean", "DigitalOcean"

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat completions"
        EMBEDDING = "embedding", "Embeddings"

    # Providers with an embeddings API (Anthropic has none); the proxy's own
    # list is its embeddings adapters (gateway.proxy.providers), kept equal by a test.
    EMBEDDING_PROVIDERS = frozenset({Provider.OPENAI.value, Provider.DIGITALOCEAN.value})

    public_name = models.CharField(
        max_length=100, unique=True, help_text="The model name clients send and see."
    )
    provider = models.CharField(max_length=32, choices=Provider.choices)
    provider_model = models.CharField(
        max_length=200, help_text="The provider's own model id, sent upstream."
    )
    input_price_usd = models.DecimalField(
        "input price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(Decimal(0))],
    )
    output_price_usd = models.DecimalField(
        "output price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(Decimal(0))],
    )
    has_hidden_reasoning = models.BooleanField(
        "hidden reasoning",
        default=False,
        help_text=(
            "The model produces reasoning tokens it never shows (e.g. GPT-5): when a "
            "request's usage is unknown, its whole output bound is charged."
        ),
    )
    accepts_images = models.BooleanField(
        "accepts images",
        default=False,
        help_text="Clients may send images (image_url parts) in user messages.",
    )
    max_tokens_per_image = models.PositiveIntegerField(
        "max tokens per image",
        default=0,
        help_text=(
            "The most input tokens one image can cost on this model (the "
            "provider's published rule): the budget counts each image at this."
        ),
    )
    kind = models.CharField(
        max_length=16,
        choices=Kind.choices,
        default=Kind.CHAT,
        help_text=(
            "What the model serves: chat routes answer /v1/chat/completions only, embedding "
            "routes /v1/embeddings only."
        ),
    )
    fallbacks = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "Public model names tried in this order when this model's provider fails before "
            "any output (each with its own provider and prices; their own fallbacks follow "
            "them). Also set with manage.py set_fallbacks."
        ),
    )
    is_free_tier = models.BooleanField("free tier", default=False)
    is_paid_tier = models.BooleanField("paid tier", default=True)
    is_enabled = models.BooleanField("enabled", default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["public_name"]
        constraints = [
            # An image must cost something in the budget's bound.
            models.CheckConstraint(
                condition=models.Q(accepts_images=False) | models.Q(max_tokens_per_image__gt=0),
                name="modelroute_images_have_a_token_bound",
                violation_error_message=(
                    "A model that accepts images needs its max tokens per image."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.public_name

    # Every process keeps a copy of the route table (gateway.proxy.routes) and
    # reloads it when the global epoch moves: any change made through the ORM
    # (admin, shell, seed) bumps it once committed. QuerySet.update() bypasses
    # this; use save() or call bump_epoch() yourself.
    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        transaction.on_commit(bump_epoch, using=kwargs.get("using"))

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        result = super().delete(*args, **kwargs)
        transaction.on_commit(bump_epoch, using=kwargs.get("using"))
        return result

    def clean(self) -> None:
        super().clean()
        if self.kind == self.Kind.EMBEDDING and self.provider not in self.EMBEDDING_PROVIDERS:
            raise ValidationError({"kind": f"{self.get_provider_display()} has no embeddings API."})
        self.check_fallbacks()

    def check_fallbacks(self) -> None:
        """ValidationError unless ``fallbacks`` name other existing routes of the same
        kind, without a cycle through any route's fallbacks (gateway.fallbacks)."""
        if not isinstance(self.fallbacks, list) or not all(
            isinstance(name, str) for name in self.fallbacks
        ):
            raise ValidationError({"fallbacks": "A list of public model names."})
        others = ModelRoute.objects.exclude(pk=self.pk) if self.pk else ModelRoute.objects.all()
        rows = list(others.values_list("public_name", "fallbacks", "kind"))
        fallbacks_of = {name: list(chain or []) for name, chain, _kind in rows}
        kinds = {name: kind for name, _chain, kind in rows} | {self.public_name: self.kind}
        try:
            chains.check(self.public_name, self.fallbacks, fallbacks_of, kinds)
        except chains.FallbackError as exc:
            raise ValidationError({"fallbacks": str(exc)}) from None

    @property
    def tiers(self) -> frozenset[str]:
        return frozenset(
            tier
            for tier, allowed in (("free", self.is_free_tier), ("paid", self.is_paid_tier))
            if allowed
        )
