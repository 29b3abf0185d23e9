#!/usr/bin/env bash
# `make demo`: the embedded gateway in front of the test suite's fake provider
# (tests/fakes/provider.py: a real HTTP server on 127.0.0.1 that speaks
# OpenAI's and Anthropic's wire formats and answers from canned text), so a
# newcomer or a client-app developer sees register -> approve -> chat with
# no provider key and no spending. Its data lives in var/demo, apart from
# what `make serve` keeps in var/.
#
#   bash scripts/demo.sh                 serve (what `make demo` runs)
#   bash scripts/demo.sh manage ARGS...  a manage.py command on the demo's data
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
FAKE_PORT=${DEMO_PROVIDER_PORT:-9100}
fake_url="http://127.0.0.1:$FAKE_PORT"

# The fake's own keys (tests/fakes/provider.py DEFAULT_KEYS): nothing real.
export VAR_DIR="${VAR_DIR:-var/demo}"
export OPENAI_BASE_URL="$fake_url/openai/v1" OPENAI_API_KEY=sk-fake-openai-0123456789abcdef
export DIGITALOCEAN_BASE_URL="$fake_url/do/v1" DIGITALOCEAN_API_KEY=dop_v1_fake0123456789abcdef
export ANTHROPIC_BASE_URL="$fake_url/anthropic" ANTHROPIC_API_KEY=sk-ant-fake-0123456789abcdef

if [ "${1:-serve}" = manage ]; then
    shift
    exec "$PY" manage.py "$@"
fi

"$PY" -m tests.fakes.provider --port "$FAKE_PORT" &
fake=$!
trap 'kill "$fake" 2>/dev/null || true' EXIT

"$PY" manage.py migrate --noinput --verbosity 0
"$PY" manage.py collectstatic --noinput --verbosity 0
echo "demo: gateway on http://$HOST:$PORT, fake provider on $fake_url (data in $VAR_DIR)"
echo "demo: approve a device with: bash scripts/demo.sh manage approve_device <deviceId>"
"$PY" -m uvicorn gateway.asgi:application --host "$HOST" --port "$PORT" \
    --no-access-log --no-proxy-headers --limit-concurrency "${LIMIT_CONCURRENCY:-1000}"
