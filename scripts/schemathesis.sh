#!/usr/bin/env bash
# Property-based test of the API against its own OpenAPI document (docs/openapi.json), run
# by `make test`: schemathesis generates requests for every operation from the document
# and checks that no answer is a 5xx and that every answer (status, content type, headers,
# body) is one the document describes, and that secured operations refuse a missing key.
#
#   scripts/schemathesis.sh          install schemathesis if missing, then run it against a
#                                    live wf-ingestor (debug build) on a fresh database and
#                                    vhost, with an API key of its own; everything it made
#                                    is removed at the end
#
# Settings (environment): ST_EXAMPLES (examples per operation, default 100), ST_SEED
# (default 20260519), ST_CHECKS (the checks, comma-separated). The same seed and count give
# the same requests. One worker: CPython 3.11's parser can fail when hypothesis describes
# strategies from two threads at once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ST_VERSION="4.32.5"
VENV="${ST_VENV:-$ROOT/target/schemathesis-venv}"
ST_EXAMPLES="${ST_EXAMPLES:-100}"
ST_SEED="${ST_SEED:-20260519}"
PG_URL="${WF_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432}"
CARGO="${CARGO:-cargo}"

log() { printf '[schemathesis] %s\n' "$*" >&2; }
die() { printf '[schemathesis] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

# A virtualenv of its own: Debian's Python refuses system-wide pip installs (PEP 668).
install_schemathesis() {
    if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/st" --version 2>/dev/null)" = "st, version $ST_VERSION" ]; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "python3 with venv is missing and this is not Debian-like: install it by hand"
        log "installing python3 and python3-venv"
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv
    fi
    log "installing schemathesis $ST_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_schemathesis
if ! command -v curl >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "curl is missing: install it"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y curl
fi
"$CARGO" build --quiet -p wf-ingestor -p wfctl
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

SUFFIX="$(tr -dc 'a-z' </dev/urandom | head -c 12 || true)"
DB="wf_st_$SUFFIX"
VHOST="wf_st_$SUFFIX"
API_PORT="$(free_port)"
OPS_PORT="$(free_port)"
WORK="$(mktemp -d)"
INGESTOR_PID=""

cleanup() {
    if [ -n "$INGESTOR_PID" ] && kill -0 "$INGESTOR_PID" 2>/dev/null; then
        kill -TERM "$INGESTOR_PID" 2>/dev/null || true
        wait "$INGESTOR_PID" 2>/dev/null || true
    fi
    $SUDO rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
    psql -w -X -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

$SUDO rabbitmqctl -q add_vhost "$VHOST" >/dev/null
$SUDO rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

export WF_DATABASE_URL="$PG_URL/$DB"
export WF_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
export WF_HTTP_ADDR="127.0.0.1:$API_PORT"
export WF_METRICS_ADDR="127.0.0.1:$OPS_PORT"
export WF_LOG="${WF_LOG:-warn}"
# One key sends every request as fast as the API answers: without budgets, each answer
# depends on the request alone, not on how fast the machine is (429s are tested in tests/).
export WF_API_RATE_LIMIT_EVENTS=0 WF_API_RATE_LIMIT_MANAGEMENT=0

"$BIN/wf-ingestor" >"$WORK/ingestor.log" 2>&1 &
INGESTOR_PID=$!
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null "http://127.0.0.1:$OPS_PORT/readyz" 2>/dev/null; do
    kill -0 "$INGESTOR_PID" 2>/dev/null || { cat "$WORK/ingestor.log" >&2; die "wf-ingestor exited during start-up"; }
    [ "$SECONDS" -lt "$deadline" ] || { cat "$WORK/ingestor.log" >&2; die "wf-ingestor not ready after 60 s"; }
    sleep 0.2
done

KEY="$("$BIN/wfctl" api-key create --org org_schemathesis --name schemathesis | grep -oE 'wf_live_[A-Za-z0-9]+' | head -1)"
[ -n "$KEY" ] || die "wfctl api-key create printed no key"

log "schemathesis $ST_VERSION: seed $ST_SEED, $ST_EXAMPLES examples per operation and phase"
status=0
# Run from the scratch directory: hypothesis keeps a database of past failures in the
# working directory, which would make later runs replay them instead of the seed's cases.
(cd "$WORK" && "$VENV/bin/st" run "http://127.0.0.1:$API_PORT/api/v1/openapi.json" \
    --header "Authorization: Bearer $KEY" \
    --checks "${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,negative_data_rejection,unsupported_method}" \
    --phases examples,coverage,fuzzing \
    --mode all \
    --max-examples "$ST_EXAMPLES" \
    --seed "$ST_SEED" \
    --workers 1 \
    --no-shrink \
    --request-timeout 10 \
    --warnings off) \
    || status=$?
if [ "$status" -ne 0 ]; then
    log "wf-ingestor log:"
    tail -n 50 "$WORK/ingestor.log" >&2 || true
    die "schemathesis found failures (exit $status); rerun with: scripts/schemathesis.sh (or make schemathesis)"
fi
log "no failures"
