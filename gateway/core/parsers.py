"""DRF's JSON parser with the client API's rules (``gateway.core.jsonbody.parse_json_body``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from gateway.core.errors import InvalidRequest
from gateway.core.jsonbody import parse_json_body


class JSONParser(parsers.JSONParser):
    """Invalid JSON or JSON nested deeper than 64 levels is a 400 ``invalid_request``.

    DRF's own parser hands the body to the standard library's, which accepts
    any depth until it runs out of stack a thousand levels down: a 500.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return parse_json_body(stream.read())
        except InvalidRequest as error:
            raise ParseError(error.detail) from None
