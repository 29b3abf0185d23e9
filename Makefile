# The README's two commands are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The production-profile test run uses this machine's PostgreSQL and Redis:
# pytest-django creates (and drops) test_<name>, and the run owns this Redis db.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/hanzo
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=
# Connections `make serve` takes at once; past it uvicorn answers 503 (the
# same cap as gunicorn.conf.py's worker_connections, for the same reason).
LIMIT_CONCURRENCY ?= 1000
# `make bench`: seconds per measurement and runs per measurement (medians).
BENCH_SECONDS ?= 4
BENCH_REPEAT ?= 3

.PHONY: serve demo install test test-embedded test-production lint services bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## serve: set up, migrate and serve the embedded profile on 127.0.0.1:8000
serve: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m uvicorn gateway.asgi:application --host $(HOST) --port $(PORT) --no-access-log --no-proxy-headers --limit-concurrency $(LIMIT_CONCURRENCY)

## demo: like serve, but in front of the tests' fake provider: no keys, no spending (data in var/demo)
demo: install
	PY=$(PY) HOST=$(HOST) PORT=$(PORT) LIMIT_CONCURRENCY=$(LIMIT_CONCURRENCY) bash scripts/demo.sh

## test: the whole suite, once per profile (starts PostgreSQL and Redis if they are down)
test: install services test-embedded test-production

test-embedded: install
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

test-production: install services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	SECRET_KEY=test-only-secret-key-not-for-production TOKEN_PEPPER=test-only-pepper \
	ADMIN_REQUIRE_2FA=false \
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: the import rule (import-linter, see pyproject.toml), ruff and mypy
lint: install
	$(VENV)/bin/lint-imports
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

services:
	@bash scripts/services.sh

## bench: the hot-path benchmark (bench/, not part of the test suite); see docs/benchmarks.md
bench: install services
	env -u DATABASE_URL -u REDIS_URL BENCH_SECONDS=$(BENCH_SECONDS) BENCH_REPEAT=$(BENCH_REPEAT) \
	$(PY) -m bench.bench_run

clean:
	rm -rf $(VENV) staticfiles var .mypy_cache .ruff_cache tests/artifacts
