# WorkFlows outbound webhooks: developer and CI entry points. `make help` lists them.

CARGO      ?= cargo
BENCH_ARGS ?=
SERVICES   := scripts/services.sh

.DEFAULT_GOAL := help
.PHONY: help services build test run stop bench fmt clippy openapi schemathesis

help: ## this list
	@echo "WorkFlows webhooks - make targets:"
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## (.*)/  \1\t\2/' | expand -t 12

services: ## install if missing and start PostgreSQL + RabbitMQ (idempotent)
	$(SERVICES) up

build: ## release build of every binary
	$(CARGO) build --release --workspace

test: services ## what CI runs: fmt check, clippy -D warnings, all tests, schemathesis on the API
	$(SERVICES) test-tools
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	scripts/schemathesis.sh

schemathesis: services ## property-based test of the live API against docs/openapi.json (installs schemathesis if missing)
	scripts/schemathesis.sh

openapi: ## regenerate docs/openapi.json from the code
	$(CARGO) run -q -p wf-ingestor -- openapi > docs/openapi.json

run: services build ## start wf-ingestor + wf-worker in the background (.run/), print a demo API key and curls
	$(SERVICES) start-app

stop: ## stop what `make run` started
	$(SERVICES) stop-app

bench: services ## load test: wfctl bench $(BENCH_ARGS), e.g. make bench BENCH_ARGS="--events 10000 --rate 2000 --webhooks 10"
	$(CARGO) run --release -p wfctl -- bench $(BENCH_ARGS)

fmt: ## format the workspace
	$(CARGO) fmt --all

clippy: ## lint the workspace, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings
