# The one entry point. `make test` runs every check and test; `make dev`
# runs the functions locally under `cargo lambda watch`.
#
# Everything a fresh machine lacks is set up here (the Python virtualenv
# with moto, PyJWT, cargo-lambda and the linters); system packages and the
# Rust musl target come from .ci/run.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
DEV_PORT ?= 9000
export AWS_REGION ?= eu-central-1
export AWS_ACCESS_KEY_ID ?= test
export AWS_SECRET_ACCESS_KEY ?= test
export CC_x86_64_unknown_linux_musl ?= musl-gcc

.PHONY: help venv lint build test test-rust validate dev clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Python tools for tests and local runs
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

build: ## Debug builds of every binary (functions, emulator, users-admin)
	cargo build --workspace --bins

test-rust: venv build ## Every Rust test, against moto (or $$AWS_ENDPOINT_URL)
	infra/local/with-dynamodb.sh cargo nextest run --workspace

validate: venv build ## Delivery configuration: CI file, SAM, OpenShift, Dockerfile
	USERS_ADMIN=target/debug/users-admin infra/ci/validate.sh

test: venv lint test-rust validate test-container ## Everything: lint, all tests, validation, the container smoke test

dev: venv build ## Functions under cargo lambda watch on $$DEV_PORT, against moto
	DEV_PORT=$(DEV_PORT) infra/local/with-dynamodb.sh infra/local/dev.sh

clean: ## Remove build output, the virtualenv and local run state
	cargo clean
	rm -rf $(VENV) .run dist

.PHONY: run test-container

run: venv ## Release binaries under the emulator on $$PORT (8080), against moto
	infra/local/run.sh

test-container: venv ## Build the image and run it as OpenShift would (SKIP_CONTAINER_TEST=1 skips)
	@if [[ "$${SKIP_CONTAINER_TEST:-}" == 1 ]]; then \
		echo "container smoke test: skipped (SKIP_CONTAINER_TEST=1)"; \
	else \
		tests/container/smoke.sh; \
	fi

.PHONY: bench

bench: venv ## Benchmarks beside their references; writes docs/benchmarks.md (bounded, ~5 min)
	bench/run.sh
