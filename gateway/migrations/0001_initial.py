import django.core.validators
from decimal import Decimal

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="ModelRoute",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("public_name", models.CharField(help_text="The model name clients send and see.", max_length=100, unique=True)),
                ("provider", models.CharField(choices=[("openai", "OpenAI"), ("anthropic", "Anthropic"), ("digitalocean", "DigitalOcean")], max_length=32)),
                ("provider_model", models.CharField(help_text="The provider's own model id, sent upstream.", max_length=200)),
                ("input_price_usd", models.DecimalField(decimal_places=6, max_digits=12, validators=[django.core.validators.MinValueValidator(Decimal("0"))], verbose_name="input price (USD per 1M tokens)")),
                ("output_price_usd", models.DecimalField(decimal_places=6, max_digits=12, validators=[django.core.validators.MinValueValidator(Decimal("0"))], verbose_name="output price (USD per 1M tokens)")),
                ("is_free_tier", models.BooleanField(default=False, verbose_name="free tier")),
                ("is_paid_tier", models.BooleanField(default=True, verbose_name="paid tier")),
                ("is_enabled", models.BooleanField(default=True, verbose_name="enabled")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["public_name"]},
        ),
    ]
