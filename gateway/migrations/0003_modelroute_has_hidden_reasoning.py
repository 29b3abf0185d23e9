from django.db import migrations, models

# SPEC section 6: openai-gpt-5 produces hidden reasoning tokens (billed as
# output, never shown), so an unknown usage charges its whole output bound.
HIDDEN_REASONING_ROUTES = ("openai-gpt-5",)


def flag_seeded_routes(apps, schema_editor):
    ModelRoute = apps.get_model("gateway", "ModelRoute")
    ModelRoute.objects.filter(public_name__in=HIDDEN_REASONING_ROUTES).update(
        has_hidden_reasoning=True
    )


class Migration(migrations.Migration):
    dependencies = [("gateway", "0002_seed_routes")]

    operations = [
        migrations.AddField(
            model_name="modelroute",
            name="has_hidden_reasoning",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "The model produces reasoning tokens it never shows (e.g. GPT-5): when a "
                    "request's usage is unknown, its whole output bound is charged."
                ),
                verbose_name="hidden reasoning",
            ),
        ),
        migrations.RunPython(flag_seeded_routes, migrations.RunPython.noop),
    ]
