"""``manage.py set_fallbacks MODEL [FALLBACK_MODEL ...]``: the models tried, in order,
when MODEL's provider fails before any output; none named = no fallbacks."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import fallbacks as chains
from gateway.models import ModelRoute


class Command(BaseCommand):
    help = (
        "Set MODEL's fallback models, in order (none: no fallbacks), and print the chain a "
        "request for MODEL may take. Unknown models and cycles are refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("fallbacks", nargs="*", metavar="fallback_model")

    def handle(self, *args: Any, **options: Any) -> None:
        name, names = options["model"], list(options["fallbacks"])
        route = ModelRoute.objects.filter(public_name=name).first()
        if route is None:
            raise CommandError(f"unknown model {name[:100]!r}")
        route.fallbacks = names
        try:
            route.check_fallbacks()
        except ValidationError as exc:
            raise CommandError(" ".join(exc.message_dict["fallbacks"])) from None
        route.save(update_fields=["fallbacks", "updated_at"])
        fallbacks_of = dict(ModelRoute.objects.values_list("public_name", "fallbacks"))
        chain = chains.chain(name, fallbacks_of)
        disabled = set(
            ModelRoute.objects.filter(public_name__in=chain, is_enabled=False).values_list(
                "public_name", flat=True
            )
        )
        steps = [f"{step} (disabled: skipped)" if step in disabled else step for step in chain]
        self.stdout.write(" -> ".join([name, *steps]) if steps else f"{name}: no fallbacks")
