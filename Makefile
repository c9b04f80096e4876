# The commands the README names. `make demo` and `make test` install what they need first.
export UV_PYTHON_DOWNLOADS := never
UV ?= uv

.PHONY: install demo test test-unit test-integration lint format typecheck bench check clean

install:  ## the bot, the dev tools and the demo extra (Synapse) into .venv
	$(UV) sync --locked --all-extras

demo: install  ## a throwaway Synapse + the bot in an encrypted room; prints how to log in
	$(UV) run readybot demo

test: install  ## the whole suite: unit tests and integration tests against a real Synapse
	$(UV) run pytest

test-unit: install
	$(UV) run pytest tests/unit

test-integration: install
	$(UV) run pytest tests/integration

lint: install  ## ruff (lint + format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

typecheck: install
	$(UV) run mypy

bench: install  ## !ping round trip vs a bare nio echo client, and the bot's memory
	$(UV) run python bench/ping_rtt.py

check: lint test

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache state
