# WorkFlows outbound webhooks: developer and CI entry points. `make help` lists them.

CARGO      ?= cargo
BENCH_ARGS ?=
CHAOS_ARGS ?=
SERVICES   := scripts/services.sh

# Supply chain (`make deny`): cargo-deny with deny.toml. The advisories check reads a local
# copy of the RustSec database, never the network; it is skipped, with a note, when there is
# none. ADVISORY_DB is relative to the repository root.
CARGO_DENY_VERSION ?= 0.20.2
ADVISORY_DB        ?= ../shared/advisory-db
# Where cargo-deny opens the database: <db-path>/<repo name>-<hash of the db-url> (deny.toml).
ADVISORY_CHECKOUT  := target/advisory-dbs/advisory-db-3157b0e258782691

# Fuzzing (`make fuzz-smoke`, `make fuzz`): cargo-fuzz on the stable toolchain, so without
# a sanitizer (-Zsanitizer needs nightly; the code under test forbids `unsafe`, so there is
# no memory error for one to find). Coverage-guided libFuzzer and debug assertions
# (overflow checks) still apply.
CARGO_FUZZ_VERSION ?= 0.13.2
FUZZ               := $(CARGO) fuzz
FUZZ_FLAGS         := --fuzz-dir fuzz --sanitizer none
FUZZ_TARGETS       ?= amqp_event webhook_url durations config api_bodies
FUZZ_SMOKE_RUNS    ?= 100000
FUZZ_SEED          ?= 1
FUZZ_TARGET        ?= api_bodies
FUZZ_SECONDS       ?= 600

.DEFAULT_GOAL := help
.PHONY: help services tools build test deny fuzz-build fuzz-smoke fuzz run stop bench chaos chaos-short fmt clippy openapi schemathesis

help: ## this list
	@echo "WorkFlows webhooks - make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 14

services: ## install if missing and start PostgreSQL + RabbitMQ (idempotent)
	$(SERVICES) up

build: ## release build of every binary
	$(CARGO) build --release --workspace

tools: ## install cargo-deny and cargo-fuzz if missing
	@$(CARGO) deny --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deny --version $(CARGO_DENY_VERSION)
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)

test: services tools ## what CI runs: fmt check, clippy -D warnings, supply-chain check, all tests, schemathesis on the API, fuzz smoke run, short chaos run
	$(SERVICES) test-tools
	$(CARGO) fmt --all --check
	$(CARGO) fmt --check --manifest-path fuzz/Cargo.toml
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(MAKE) --no-print-directory deny
	$(CARGO) test --workspace
	scripts/schemathesis.sh
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory chaos-short

deny: tools ## supply chain: bans, licenses, sources; advisories from the local RustSec copy (ADVISORY_DB), offline
	@# cargo-deny reads every crate of the lock file, other platforms' too, which a build
	@# alone does not download; it then runs offline (no advisory or index fetching).
	$(CARGO) fetch --locked
	$(CARGO) deny --locked --offline check --hide-inclusion-graph bans licenses sources
	@if [ -d "$(ADVISORY_DB)/crates" ]; then \
		scripts/advisory-db.sh "$(ADVISORY_DB)" "$(ADVISORY_CHECKOUT)" && \
		$(CARGO) deny --locked --offline check --hide-inclusion-graph advisories; \
	else \
		echo "note: no RustSec advisory database at $(ADVISORY_DB): advisories check skipped (make deny ADVISORY_DB=path/to/advisory-db)"; \
	fi

fuzz-build: tools ## build every fuzz target (fuzz/, its own workspace)
	$(FUZZ) build $(FUZZ_FLAGS)

fuzz-smoke: fuzz-build ## a short deterministic run of every fuzz target over its committed corpus
	@for t in $(FUZZ_TARGETS); do \
		rm -rf target/fuzz-smoke/$$t && mkdir -p target/fuzz-smoke/$$t && \
		printf 'fuzz-smoke %-12s ' "$$t" && \
		if $(FUZZ) run $(FUZZ_FLAGS) $$t target/fuzz-smoke/$$t fuzz/corpus/$$t -- \
			-seed=$(FUZZ_SEED) -runs=$(FUZZ_SMOKE_RUNS) >target/fuzz-smoke/$$t.log 2>&1; \
		then grep -E '^Done' target/fuzz-smoke/$$t.log; \
		else cat target/fuzz-smoke/$$t.log; echo "fuzz-smoke: $$t failed (reproducer under fuzz/artifacts/$$t/)"; exit 1; fi; \
	done

fuzz: fuzz-build ## fuzz one target for longer: make fuzz FUZZ_TARGET=webhook_url FUZZ_SECONDS=3600
	mkdir -p target/fuzz-corpus/$(FUZZ_TARGET)
	$(FUZZ) run $(FUZZ_FLAGS) $(FUZZ_TARGET) target/fuzz-corpus/$(FUZZ_TARGET) fuzz/corpus/$(FUZZ_TARGET) -- \
		-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

schemathesis: services ## property-based test of the live API against docs/openapi.json (installs schemathesis if missing)
	scripts/schemathesis.sh

openapi: ## regenerate docs/openapi.json from the code
	$(CARGO) run -q -p wf-ingestor -- openapi > docs/openapi.json

run: services build ## start wfctl listen, wf-ingestor and wf-worker (.run/), deliver a first event to the listener, print it and curls
	$(SERVICES) start-app

stop: ## stop what `make run` started (listener included)
	$(SERVICES) stop-app

bench: services ## load test: wfctl bench $(BENCH_ARGS), e.g. make bench BENCH_ARGS="--events 10000 --rate 2000 --webhooks 10"
	$(CARGO) run --release -p wfctl -- bench $(BENCH_ARGS)

chaos: services ## fault injection with loss accounting on the release binaries: make chaos CHAOS_ARGS="--scenario worker-kill"
	$(CARGO) build --release -p wf-worker -p wf-ingestor -p wfctl
	target/release/wfctl chaos $(CHAOS_ARGS)

chaos-short: ## the reduced chaos run of `make test` (every scenario, fewer events, shorter outages)
	@$(MAKE) --no-print-directory chaos CHAOS_ARGS="--short $(CHAOS_ARGS)"

fmt: ## format the workspace and the fuzz targets
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

clippy: ## lint the workspace, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings
