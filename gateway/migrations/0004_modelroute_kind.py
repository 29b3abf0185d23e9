from decimal import Decimal

from django.db import migrations, models

# The route kind (chat or embedding), and the first embedding route at
# OpenAI's published price: text-embedding-3-small, $0.02 per 1M input tokens
# (embeddings produce no output tokens). Written out here, not read from
# gateway.proxy.routes.SEED_ROUTES, so that this migration stays what it was.
EMBEDDING_ROUTE = {
    "public_name": "openai-text-embedding-3-small",
    "provider": "openai",
    "provider_model": "text-embedding-3-small",
    "input_price_usd": Decimal("0.02"),
    "output_price_usd": Decimal("0"),
    "kind": "embedding",
    "is_free_tier": True,
    "is_paid_tier": True,
    "is_enabled": True,
}


def seed_embedding_route(apps, schema_editor):
    """Create the route unless a route of that name exists (an admin's is left alone)."""
    ModelRoute = apps.get_model("gateway", "ModelRoute")
    if ModelRoute.objects.filter(public_name=EMBEDDING_ROUTE["public_name"]).exists():
        return
    ModelRoute.objects.create(**EMBEDDING_ROUTE)


def remove_embedding_route(apps, schema_editor):
    ModelRoute = apps.get_model("gateway", "ModelRoute")
    ModelRoute.objects.filter(
        public_name=EMBEDDING_ROUTE["public_name"], kind="embedding"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("gateway", "0003_modelroute_has_hidden_reasoning")]

    operations = [
        migrations.AddField(
            model_name="modelroute",
            name="kind",
            field=models.CharField(
                choices=[("chat", "Chat completions"), ("embedding", "Embeddings")],
                default="chat",
                help_text=(
                    "What the model serves: chat routes answer /v1/chat/completions only, "
                    "embedding routes /v1/embeddings only."
                ),
                max_length=16,
            ),
        ),
        migrations.RunPython(seed_embedding_route, remove_embedding_route),
    ]
