# chat-gateway: the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
GATEWAY_BIN ?= $(CURDIR)/target/debug/chat-gateway
PYTEST_ARGS ?=

.PHONY: run test build unit blackbox deps redis-server nginx fmt lint ci cluster bench conformance clean

## Run one node on 127.0.0.1:8080 with the embedded (memory) broker.
run:
	$(CARGO) run --release -p gateway --bin chat-gateway -- serve

build:
	$(CARGO) build --workspace --all-targets

## Every test: unit tests of all crates, then the black-box suite against the real binary.
test: build deps
	$(CARGO) test --workspace
	GATEWAY_BIN=$(GATEWAY_BIN) $(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

unit:
	$(CARGO) test --workspace

blackbox: build deps
	GATEWAY_BIN=$(GATEWAY_BIN) $(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

## Test dependencies: the Python client libraries, and redis-server for cluster tests.
deps: redis-server nginx
	@$(PYTHON) -c "import pytest, websockets, httpx, jwt, yaml" 2>/dev/null || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

redis-server:
	@command -v redis-server >/dev/null || { \
		echo "installing redis-server with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

## nginx, for the smoke test of `make cluster` through the load balancer (skipped without it).
nginx:
	@command -v nginx >/dev/null || { \
		echo "installing nginx with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null) || \
		echo "nginx could not be installed: the nginx part of the cluster smoke test will be skipped"; }

## A local cluster like deploy/docker-compose.yml, without Docker: redis-server, three
## nodes on 127.0.0.1:8081-8083 and, when installed, nginx on 127.0.0.1:8080. Ctrl-C stops it.
cluster: redis-server
	scripts/cluster.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks on a release build: starts its own redis-server, gateway nodes and the floor;
## one JSON line per run, then a summary table; exits 1 when a target is missed.
bench: redis-server
	$(CARGO) build --release -p gateway -p bench
	./target/release/chat-bench suite --gateway-bin $(CURDIR)/target/release/chat-gateway

## The contract checks shipped beside the repository (not part of `make test`).
conformance: build
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r ../shared/conformance/requirements.txt
	GATEWAY_BIN=$(GATEWAY_BIN) $(PYTHON) -m pytest -q ../shared/conformance

ci: lint test

clean:
	$(CARGO) clean
