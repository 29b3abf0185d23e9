from django.db import migrations, models

# The most input tokens one image can cost on each seeded image route, from
# the providers' published rules (images are never decoded: the budget's
# bound counts every image at this maximum).
# - openai-gpt-4o: OpenAI's vision guide ("Calculating costs",
#   platform.openai.com/docs/guides/vision): detail "high" scales the image to
#   fit 2048 x 2048, then its short side to 768, and costs 85 tokens plus 170
#   per 512-px tile; at most 2 x 4 tiles fit, so 85 + 170 * 8 = 1445 ("low"
#   costs 85).
# - openai-gpt-5: its own rule could not be confirmed when this was written
#   (OpenAI has priced newer models' images differently, by patches and with
#   multipliers), so twice the GPT-4o maximum, 2890, until an operator sets
#   the published figure in the admin: too high costs headroom, too low money.
# - anthropic-claude-4-sonnet: Anthropic's vision guide
#   (docs.anthropic.com/en/docs/build-with-claude/vision): tokens are about
#   width * height / 750, and an image above ~1,600 tokens (or 1568 px on its
#   long edge) is scaled down first; 1800 leaves a margin over the "about".
IMAGE_ROUTES = {
    "openai-gpt-4o": 1445,
    "openai-gpt-5": 2890,
    "anthropic-claude-4-sonnet": 1800,
}


def flag_seeded_routes(apps, schema_editor):
    ModelRoute = apps.get_model("gateway", "ModelRoute")
    for public_name, tokens in IMAGE_ROUTES.items():
        ModelRoute.objects.filter(public_name=public_name).update(
            accepts_images=True, max_tokens_per_image=tokens
        )


class Migration(migrations.Migration):
    dependencies = [("gateway", "0004_modelroute_kind")]

    operations = [
        migrations.AddField(
            model_name="modelroute",
            name="accepts_images",
            field=models.BooleanField(
                default=False,
                help_text="Clients may send images (image_url parts) in user messages.",
                verbose_name="accepts images",
            ),
        ),
        migrations.AddField(
            model_name="modelroute",
            name="max_tokens_per_image",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "The most input tokens one image can cost on this model (the "
                    "provider's published rule): the budget counts each image at this."
                ),
                verbose_name="max tokens per image",
            ),
        ),
        migrations.RunPython(flag_seeded_routes, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="modelroute",
            constraint=models.CheckConstraint(
                condition=models.Q(accepts_images=False) | models.Q(max_tokens_per_image__gt=0),
                name="modelroute_images_have_a_token_bound",
                violation_error_message=(
                    "A model that accepts images needs its max tokens per image."
                ),
            ),
        ),
    ]
