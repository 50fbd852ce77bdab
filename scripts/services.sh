#!/usr/bin/env bash
# Local dependencies and a local run of WorkFlows webhooks, for development and CI.
#
#   scripts/services.sh up          install (Debian, if missing) and start PostgreSQL and
#                                   RabbitMQ, wait until both accept connections; idempotent
#   scripts/services.sh test-tools  (make test) install what the tests run besides the
#                                   services (promtool), or fail saying what is missing
#   scripts/services.sh status      say whether each dependency is reachable
#   scripts/services.sh start-app   (make run) start `wfctl listen` (a local HTTPS receiver),
#                                   then target/release/wf-ingestor and wf-worker trusting it,
#                                   in the background; wait for /readyz, create a demo API key
#                                   and a demo webhook to the receiver, send an event, wait until
#                                   the receiver got it with both signatures verified, and print
#                                   that line and curl commands to try the API
#   scripts/services.sh stop-app    (make stop) stop the processes started by start-app
#
# start-app listens on HTTP_ADDR (127.0.0.1:8080), INGESTOR_METRICS (127.0.0.1:9464),
# WORKER_METRICS (127.0.0.1:9465) and LISTEN_ADDR (127.0.0.1:8443); set them to move a port.
#
# Everything here is for a developer or CI machine; production runs the services under an
# orchestrator (see deploy/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
AMQP_HOST="${AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${AMQP_PORT:-5672}"
WAIT_SECS="${WAIT_SECS:-90}"          # bound on every wait below
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8080}"
INGESTOR_METRICS="${INGESTOR_METRICS:-127.0.0.1:9464}"
WORKER_METRICS="${WORKER_METRICS:-127.0.0.1:9465}"
LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8443}"   # wfctl listen (an IPv4 address)
DEMO_ORG="${DEMO_ORG:-org_demo}"
DELIVERY_WAIT_SECS="${DELIVERY_WAIT_SECS:-60}" # bound on waiting for the demo delivery

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

# True when something accepts TCP connections on host:port (bash's /dev/tcp, no tools).
tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.5 s until it succeeds.
wait_for() {
    local what="$1" secs="$2"
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.5
    done
    log "$what: ok"
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "$* is not installed and this is not a Debian-like system: install it by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $SUDO apt-get update
        APT_UPDATED=1
    fi
    log "installing $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

pg_version() {
    [ -d /etc/postgresql ] || return 1
    local v
    v="$(ls /etc/postgresql | sort -V | tail -1)"
    [ -n "$v" ] && [ -d "/etc/postgresql/$v/main" ] || return 1
    echo "$v"
}

pg_accepting() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_psql() {
    # -w: never prompt for a password; a prompt would hang CI.
    psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
}

postgres_up() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! pg_version >/dev/null; then
        apt_install postgresql
    fi
    local ver
    ver="$(pg_version)" || die "no PostgreSQL cluster under /etc/postgresql/*/main after install"

    if ! pg_accepting; then
        log "starting PostgreSQL $ver (cluster main)"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
            log "pg_ctlcluster start returned an error; waiting for the server anyway"
    fi
    wait_for "PostgreSQL on $PG_HOST:$PG_PORT" "$WAIT_SECS" pg_accepting ||
        die "PostgreSQL is not accepting connections on $PG_HOST:$PG_PORT after ${WAIT_SECS}s; see /var/log/postgresql/postgresql-$ver-main.log"

    # The services' default WF_DATABASE_URL is postgres://postgres@127.0.0.1:5432/workflows:
    # user postgres over TCP without a password. A fresh Debian install asks for
    # scram-sha-256 on host lines, so switch the loopback host lines to trust. This is for a
    # local dev/test machine only: trust means any local user can connect as any role.
    if ! pg_psql -tAc 'select 1' >/dev/null 2>&1; then
        local hba="/etc/postgresql/$ver/main/pg_hba.conf"
        [ -f "$hba" ] || die "cannot connect as postgres over TCP and $hba does not exist"
        log "user postgres cannot connect over TCP; setting loopback host lines of $hba to trust (local dev/test only)"
        $SUDO cp -n "$hba" "$hba.orig" || true
        $SUDO sed -E -i \
            -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+)[A-Za-z0-9-]+#\1trust#' \
            -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+)[A-Za-z0-9-]+#\1trust#' \
            "$hba"
        grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" ||
            echo 'host    all             all             127.0.0.1/32            trust' | $SUDO tee -a "$hba" >/dev/null
        grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust' "$hba" ||
            echo 'host    all             all             ::1/128                 trust' | $SUDO tee -a "$hba" >/dev/null
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
        wait_for "PostgreSQL trust auth for postgres@$PG_HOST" 15 pg_psql -tAc 'select 1' ||
            die "still cannot connect as postgres to $PG_HOST:$PG_PORT without a password; check $hba (an earlier line may take precedence)"
    fi

    # The default database of WF_DATABASE_URL; the services apply their migrations to it.
    if [ "$(pg_psql -tAc "select 1 from pg_database where datname = 'workflows'")" != "1" ]; then
        log "creating database workflows"
        pg_psql -c 'create database workflows' ||
            [ "$(pg_psql -tAc "select 1 from pg_database where datname = 'workflows'")" = "1" ] ||
            die "could not create database workflows"
    fi
}

rabbit_status() {
    timeout 30 $SUDO rabbitmqctl status >/dev/null 2>&1
}

# await_startup returns once the broker app is running; it fails at once while the
# Erlang node is still coming up, hence the retry loop around it.
rabbit_await_startup() {
    timeout 30 $SUDO rabbitmqctl await_startup >/dev/null 2>&1
}

rabbitmq_up() {
    if ! command -v rabbitmq-server >/dev/null 2>&1 || ! command -v rabbitmqctl >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi
    if ! rabbit_status; then
        log "starting RabbitMQ"
        $SUDO rabbitmq-server -detached || log "rabbitmq-server -detached returned an error; waiting anyway"
        wait_for "RabbitMQ startup" "$WAIT_SECS" rabbit_await_startup ||
            die "RabbitMQ did not finish starting within ${WAIT_SECS}s; see /var/log/rabbitmq/"
    fi
    wait_for "RabbitMQ on $AMQP_HOST:$AMQP_PORT" "$WAIT_SECS" tcp_open "$AMQP_HOST" "$AMQP_PORT" ||
        die "RabbitMQ is not accepting connections on $AMQP_HOST:$AMQP_PORT after ${WAIT_SECS}s; see /var/log/rabbitmq/"
}

rust_components() {
    if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo clippy/fmt missing and rustup not found"
        log "installing rust components clippy and rustfmt"
        rustup component add clippy rustfmt
    fi
}

# kill(1) sends the SIGTERMs of `wfctl bench` and of the process tests (the workspace
# forbids the unsafe libc call); minimal Debian images ship without procps. `type -P`
# looks on PATH only, past bash's builtin kill.
procps_present() {
    type -P kill >/dev/null 2>&1 || apt_install procps
}

# promtool checks and unit-tests deploy/prometheus/alerts.yml in the test suite; Debian
# ships it in the `prometheus` package.
promtool_present() {
    command -v promtool >/dev/null 2>&1 && return 0
    apt_install prometheus
    # The package enables a Prometheus server; tests need only the promtool binary.
    pkill -x prometheus >/dev/null 2>&1 || true
    command -v promtool >/dev/null 2>&1 || die "promtool is not on PATH after installing prometheus"
}

cmd_up() {
    postgres_up
    rabbitmq_up
    rust_components
    procps_present
    # Needed by `make test` only (test-tools), so a machine that cannot install it can
    # still `make run`.
    (promtool_present) || log "promtool is missing; \`make test\` needs it (Debian package prometheus)"
    log "PostgreSQL ($PG_HOST:$PG_PORT) and RabbitMQ ($AMQP_HOST:$AMQP_PORT) are up"
}

# What the test suite runs besides the services; a test that needs a missing tool fails
# rather than skipping, so install it or stop here.
cmd_test_tools() {
    procps_present
    promtool_present
    log "test tools: $(command -v promtool), $(type -P kill)"
}

cmd_status() {
    local rc=0
    if pg_accepting; then log "PostgreSQL $PG_HOST:$PG_PORT: accepting"; else log "PostgreSQL $PG_HOST:$PG_PORT: DOWN"; rc=1; fi
    if tcp_open "$AMQP_HOST" "$AMQP_PORT"; then log "RabbitMQ $AMQP_HOST:$AMQP_PORT: accepting"; else log "RabbitMQ $AMQP_HOST:$AMQP_PORT: DOWN"; rc=1; fi
    for name in wfctl-listen wf-ingestor wf-worker; do
        if pid="$(app_pid "$name")"; then log "$name: running (pid $pid)"; else log "$name: not running"; fi
    done
    return "$rc"
}

# ---------------------------------------------------------------- the app (make run/stop)

# The pid of a process started by start-app (wf-ingestor, wf-worker or wfctl-listen), if it
# is still that program.
app_pid() {
    local name="$1" pidfile="$RUN_DIR/$1.pid" pid program="/$1( |\$)"
    [ "$name" = wfctl-listen ] && program="/wfctl listen( |\$)"
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: only ever signal a process running our binary.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq -- "$program" || return 1
    echo "$pid"
}

http_ok() {
    # http_ok URL: 2xx?
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 3 "$1" 2>/dev/null
    else
        local hostport="${1#http://}"
        hostport="${hostport%%/*}"
        local path="/${1#http://*/}"
        timeout 3 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}
            printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' '$path' '$hostport' >&3
            head -1 <&3 | grep -q ' 2[0-9][0-9] '" 2>/dev/null
    fi
}

cmd_stop_app() {
    local name pid
    for name in wf-worker wf-ingestor wfctl-listen; do
        if pid="$(app_pid "$name")"; then
            log "stopping $name (pid $pid, SIGTERM)"
            kill -TERM "$pid" 2>/dev/null || true
            # The services drain for WF_SHUTDOWN_GRACE (30s by default) before exiting.
            if ! wait_for "$name exit" 40 bash -c "! kill -0 $pid 2>/dev/null"; then
                log "$name did not exit after 40s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$RUN_DIR/$name.pid"
    done
}

# start_one NAME METRICS_ADDR: a service in the background, delivering to the local
# receiver: its certificate is trusted (added to any WF_EXTRA_ROOT_CA of the environment) and
# its address allowed (added to any WF_ALLOWED_TARGET_CIDRS).
start_one() {
    local name="$1" metrics_addr="$2"
    local bin="$BIN_DIR/$name"
    [ -x "$bin" ] || die "$bin not found: run 'make build' first"
    : >"$RUN_DIR/$name.log"
    WF_METRICS_ADDR="$metrics_addr" WF_HTTP_ADDR="$HTTP_ADDR" \
        WF_EXTRA_ROOT_CA="$RUN_DIR/extra-roots.pem" \
        WF_ALLOWED_TARGET_CIDRS="${WF_ALLOWED_TARGET_CIDRS:+$WF_ALLOWED_TARGET_CIDRS,}${LISTEN_ADDR%:*}/32" \
        nohup "$bin" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
    log "started $name (pid $!, log $RUN_DIR/$name.log, ops http://$metrics_addr)"
}

# The local HTTPS receiver the demo webhook delivers to. It writes a fresh certificate, and
# reads the webhook's secret from $RUN_DIR/listen-secret for every request: the secret exists
# only once the webhook is created, after the services it must trust the certificate are up.
start_listen() {
    local bin="$BIN_DIR/wfctl" cert="$RUN_DIR/listen-cert.pem" logfile="$RUN_DIR/wfctl-listen.log"
    [ -x "$bin" ] || die "$bin not found: run 'make build' first"
    rm -f "$cert" "$RUN_DIR/listen-secret"
    : >"$logfile"
    nohup "$bin" listen --addr "$LISTEN_ADDR" --cert-out "$cert" \
        --secret-file "$RUN_DIR/listen-secret" >>"$logfile" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/wfctl-listen.pid"
    local deadline=$((SECONDS + WAIT_SECS))
    # It prints where it listens once it is bound and the certificate is written.
    until grep -q 'listening on https://' "$logfile" 2>/dev/null; do
        if ! app_pid wfctl-listen >/dev/null; then
            cat "$logfile" >&2 || true
            die "wfctl listen exited during start-up (is $LISTEN_ADDR in use? set LISTEN_ADDR); log above ($logfile)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "wfctl listen not listening on $LISTEN_ADDR after ${WAIT_SECS}s ($logfile)"
        sleep 0.2
    done
    # What the services trust for delivery: the receiver's certificate, after any roots the
    # environment already names.
    {
        if [ -n "${WF_EXTRA_ROOT_CA:-}" ]; then cat "$WF_EXTRA_ROOT_CA"; fi
        cat "$cert"
    } >"$RUN_DIR/extra-roots.pem"
    log "started wfctl listen (pid $(cat "$RUN_DIR/wfctl-listen.pid"), https://$LISTEN_ADDR, log $logfile)"
}

# api METHOD PATH [BODY]: the demo key's request to the API; prints the body, fails unless 2xx.
api() {
    local args=(-sS --fail-with-body --max-time 10 -X "$1" -H "Authorization: Bearer $DEMO_KEY")
    [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' -d "$3")
    curl "${args[@]}" "http://$HTTP_ADDR/api/v1$2"
}

# The demo webhook: the one of the previous run is deleted, a new one delivers `alert.*` to
# the receiver, and its secret is handed to the receiver.
demo_webhook() {
    local id_file="$RUN_DIR/demo-webhook-id" old out
    old="$(cat "$id_file" 2>/dev/null || true)"
    if [[ "$old" =~ ^whk_[A-Za-z0-9]+$ ]]; then
        api DELETE "/webhooks/$old" >/dev/null 2>&1 || true
    fi
    rm -f "$id_file"
    out="$(api POST /webhooks "{\"name\": \"make run demo\", \"url\": \"https://$LISTEN_ADDR/webhooks/demo\", \"events\": [\"alert.*\"]}")" ||
        die "creating the demo webhook failed: $out"
    DEMO_WEBHOOK="$(printf '%s' "$out" | grep -oE '"id": *"whk_[A-Za-z0-9]+"' | head -1 | grep -oE 'whk_[A-Za-z0-9]+' || true)"
    local secret
    secret="$(printf '%s' "$out" | grep -oE '"secret": *"whsec_[A-Za-z0-9+/=]+"' | grep -oE 'whsec_[A-Za-z0-9+/=]+' || true)"
    [ -n "$DEMO_WEBHOOK" ] && [ -n "$secret" ] || die "no webhook id or secret in the API's answer: $out"
    printf '%s\n' "$DEMO_WEBHOOK" >"$id_file"
    (umask 077 && printf '%s\n' "$secret" >"$RUN_DIR/listen-secret")
    log "created the demo webhook $DEMO_WEBHOOK -> https://$LISTEN_ADDR/webhooks/demo (alert.*)"
}

# Sends an alert.created event and waits until the receiver printed its delivery; prints
# that line. Fails when the delivery does not verify or does not come.
demo_delivery() {
    local out logfile="$RUN_DIR/wfctl-listen.log" line=""
    out="$(api POST /events '{"event": "alert.created", "data": {"alertId": "alt_demo", "title": "Hello from make run", "severity": "high"}}')" ||
        die "sending the demo event failed: $out"
    log "sent alert.created ($(printf '%s' "$out" | grep -oE 'evt_[A-Za-z0-9]+' | head -1)); waiting for its delivery"
    local deadline=$((SECONDS + DELIVERY_WAIT_SECS))
    until line="$(grep -E ' alert\.created dlv_[A-Za-z0-9]+ attempt=' "$logfile" | head -1)" && [ -n "$line" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$RUN_DIR/wf-worker.log" >&2 || true
            die "no delivery reached wfctl listen within ${DELIVERY_WAIT_SECS}s (worker log above; $logfile). The services are still running: make stop"
        fi
        sleep 0.2
    done
    DEMO_LINE="$line"
    case "$line" in
        *"signatures=verified"*) ;;
        *) die "the demo delivery arrived but did not verify: $line" ;;
    esac
}

wait_ready() {
    local name="$1" metrics_addr="$2"
    local deadline=$((SECONDS + WAIT_SECS))
    until http_ok "http://$metrics_addr/readyz"; do
        if ! app_pid "$name" >/dev/null; then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            die "$name exited during start-up; log above ($RUN_DIR/$name.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            die "$name not ready on http://$metrics_addr/readyz after ${WAIT_SECS}s"
        fi
        sleep 0.5
    done
    log "$name ready"
}

cmd_start_app() {
    mkdir -p "$RUN_DIR"
    cmd_stop_app
    start_listen
    start_one wf-ingestor "$INGESTOR_METRICS"
    start_one wf-worker "$WORKER_METRICS"
    wait_ready wf-ingestor "$INGESTOR_METRICS"
    wait_ready wf-worker "$WORKER_METRICS"

    # The demo key is kept in .run/ (git-ignored, mode 600) and reused while the API still
    # accepts it, so repeated `make run`s do not pile up keys in the database.
    local out key key_file="$RUN_DIR/demo-api-key"
    key="$(cat "$key_file" 2>/dev/null || true)"
    if [ -n "$key" ] && curl -fsS -o /dev/null -H "Authorization: Bearer $key" \
        "http://$HTTP_ADDR/api/v1/webhooks" 2>/dev/null; then
        log "reusing the demo API key in $key_file"
    else
        out="$("$BIN_DIR/wfctl" api-key create --org "$DEMO_ORG" --name demo)" ||
            die "wfctl api-key create failed"
        key="$(printf '%s\n' "$out" | grep -oE 'wf_live_[A-Za-z0-9]+' | head -1 || true)"
        [ -n "$key" ] || die "no wf_live_ key in the output of wfctl api-key create: $out"
        (umask 077 && printf '%s\n' "$key" >"$key_file")
    fi
    DEMO_KEY="$key"
    demo_webhook
    demo_delivery

    cat <<EOF

WorkFlows webhooks is running (stop it with: make stop)
  API       http://$HTTP_ADDR/api/v1        logs: $RUN_DIR/wf-ingestor.log
  worker    http://$WORKER_METRICS/metrics  logs: $RUN_DIR/wf-worker.log
  receiver  https://$LISTEN_ADDR (wfctl listen)  one line per delivery: $RUN_DIR/wfctl-listen.log
  API key for $DEMO_ORG: $key
  demo webhook $DEMO_WEBHOOK (alert.*) -> https://$LISTEN_ADDR/webhooks/demo

The first delivery, as wfctl listen printed it (time, event, delivery id, attempt, both signatures):

  $DEMO_LINE

Send another event, and watch it arrive (tail -f $RUN_DIR/wfctl-listen.log):

curl -sS -X POST http://$HTTP_ADDR/api/v1/events \\
  -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\
  -d '{"event": "alert.created", "data": {"alertId": "alt_123", "severity": "high"}}'

The demo webhook's delivery log:

curl -sS http://$HTTP_ADDR/api/v1/webhooks/$DEMO_WEBHOOK/deliveries -H 'Authorization: Bearer $key'

Register a webhook of your own (the URL must be public https; WF_ALLOWED_TARGET_CIDRS and
WF_EXTRA_ROOT_CA admit a local receiver, as for the demo):

curl -sS -X POST http://$HTTP_ADDR/api/v1/webhooks \\
  -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\
  -d '{"name": "demo", "url": "https://example.com/webhooks/workflows", "events": ["alert.*"]}'

EOF
}

case "${1:-}" in
    up) cmd_up ;;
    test-tools) cmd_test_tools ;;
    status) cmd_status ;;
    start-app) cmd_start_app ;;
    stop-app) cmd_stop_app ;;
    *)
        echo "usage: $0 up|test-tools|status|start-app|stop-app" >&2
        exit 2
        ;;
esac
