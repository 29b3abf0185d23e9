"""The OpenAI chat-completions request fields the gateway knows, as the tests know them.

Written out here rather than read from the gateway, so that a field the
gateway starts to accept or forward by mistake shows in the tests.
"""

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
