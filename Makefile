# The commands the README names. `make demo` and `make test` install what they need first
# (`make test` the apt packages too, with scripts/install-test-deps).
export UV_PYTHON_DOWNLOADS := never
UV ?= uv

.PHONY: install test-deps element-deps demo test test-unit test-integration lint format typecheck bench bench-alerts bench-falco bench-store bench-store-burst bench-failover profile-alerts memory-alerts reliability check clean deploy-check image

install:  ## the bot, the dev tools and the demo extra (Synapse) into .venv
	$(UV) sync --locked --all-extras

# The Element person of the integration tests (tests/element): matrix-js-sdk and Node 22
# from npm, pinned by its package-lock.json. Reinstalled only when the lock file changes.
ELEMENT_DEPS_STAMP := tests/element/node_modules/.readybot-installed
element-deps: $(ELEMENT_DEPS_STAMP)  ## Node 22 + matrix-js-sdk into tests/element/node_modules (needs npm)
$(ELEMENT_DEPS_STAMP): tests/element/package.json tests/element/package-lock.json
	npm ci --prefix tests/element --no-audit --no-fund
	touch $@

demo: install  ## a throwaway Synapse + the bot in an encrypted room; prints how to log in
	$(UV) run readybot demo

test: install test-deps element-deps  ## the whole suite; installs its apt packages as root, else says which command to run
	$(UV) run pytest

test-unit: install
	$(UV) run pytest tests/unit

test-integration: install test-deps element-deps
	$(UV) run pytest tests/integration

test-deps:  ## the Debian packages the tests run against (as root; else prints the apt-get command)
	scripts/install-test-deps

lint: install  ## ruff (lint + format check), mypy --strict and the layers (lint-imports, .importlinter)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

typecheck: install
	$(UV) run mypy

bench: install  ## !ping round trip vs a bare nio echo client, and the bot's memory
	$(UV) run python bench/ping_rtt.py

bench-alerts: install  ## answer, time to visible, bursts under open, raised and default limits (BENCH_ARGS=--quick: ~90 s)
	$(UV) run python bench/alert_relay.py $(BENCH_ARGS)

# Where the profiles go (bench/README.md says how to read them).
PROFILE_DIR ?= bench/out

profile-alerts: install  ## py-spy on the bot during the raised-limits 1,000-group burst: $(PROFILE_DIR)/raised.txt + summary
	$(UV) run python bench/alert_relay.py --latency 0 --burst 0 --limited 0 --raised 1000 --py-spy $(PROFILE_DIR) $(BENCH_ARGS)

memory-alerts: install  ## memray on the bot through the same burst: $(PROFILE_DIR)/raised.bin, .html + summary
	$(UV) run python bench/alert_relay.py --latency 0 --burst 0 --limited 0 --raised 1000 --memray $(PROFILE_DIR) $(BENCH_ARGS)

bench-falco: install  ## 10,000 Falco events in 60 s under the homeserver's default limits
	$(UV) run python bench/falco_storm.py

bench-store: install  ## the same store calls on SQLite and on PostgreSQL (p50/p99, ratio)
	$(UV) run python bench/store_backends.py

bench-store-burst: install  ## the raised-limits 1,000-group burst with the state on SQLite, then on PostgreSQL: one table, ratio (~1 min)
	$(UV) run python bench/alert_relay.py --store both --latency 0 --burst 0 --limited 0 --raised 1000 $(BENCH_ARGS)

bench-failover: install  ## two replicas: SIGKILL the leader, time until the standby leads (p50/p99 over 20 kills, ~13 min)
	$(UV) run python bench/failover.py $(BENCH_ARGS)

reliability: install  ## docs/reliability.md: fault, attack and fuzz suites + 100,000 fuzz cases per target (RELIABILITY_ARGS="--fuzz-cases 2000": shorter)
	$(UV) run python bench/reliability.py $(RELIABILITY_ARGS)

check: lint test

deploy-check: install  ## offline checks of deploy/ and the Dockerfile: render, schemas, PromQL, yamllint, hadolint
	$(UV) run pytest tests/deploy -m "not slow"

# The image, built with podman (else buildah) from the Dockerfile; pulls the base image.
# `make image IMAGE=registry.example.org/platform/readybot:0.1.0`; on a machine where crun
# fails on the cgroups (FACTS.md), add IMAGE_BUILD_FLAGS="--isolation chroot".
IMAGE ?= readybot:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BUILD_FLAGS ?=
image:  ## the container image (podman or buildah); IMAGE=name:tag
	if command -v podman >/dev/null 2>&1; then podman build $(IMAGE_BUILD_FLAGS) -t $(IMAGE) . ; \
	else buildah bud $(IMAGE_BUILD_FLAGS) -t $(IMAGE) . ; fi

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache state
