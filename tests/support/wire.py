"""The OpenAI chat-completions request fields the gateway knows, as the tests know them.

Written out here rather than read from the gateway, so that a field the
gateway starts to accept or forward by mistake shows in the tests.
"""

from __future__ import annotations

from typing import Any

OPENAI_CHAT_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "user",
    "n",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)


def weather_tool_round_trip() -> list[dict[str, Any]]:
    """An OpenAI tool round trip after the user's message: the assistant calls
    ``get_weather`` (call_1, no arguments) and the tool answers "sunny"."""
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
