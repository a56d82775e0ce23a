# Private PostgreSQL and Redis on loopback for the local run and the tests.
# Sourced by dev.sh and test.sh. Everything a script starts is recorded and only
# that is stopped again; a server that was already running is reused and left alone.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STARTED_PG=()
STARTED_PIDS=()

log() { printf '\033[1;34m[%s]\033[0m %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# apt_install PACKAGE...: with fresh package lists (a new machine has none).
apt_install() {
    log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# missing_packages [browser]: the Debian packages the scripts need that are not installed
# (with `browser`, also those of the headless browser tests).
missing_packages() {
    local missing=()
    [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v curl >/dev/null || missing+=(curl)
    command -v jq >/dev/null || missing+=(jq)
    command -v unzip >/dev/null || missing+=(unzip)
    command -v bc >/dev/null || missing+=(bc)
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ "${1:-}" = browser ]; then
        [ -x /usr/bin/chromium ] || missing+=(chromium)
        command -v node >/dev/null || missing+=(nodejs)
        command -v npm >/dev/null || missing+=(npm)
        # Text in screenshots needs a font; chromium alone may bring none.
        fc-list 2>/dev/null | grep -q . || missing+=(fonts-dejavu-core)
    fi
    echo "${missing[@]}"
}

# ensure_packages [browser]: one apt-get run for everything missing.
ensure_packages() {
    local missing
    read -ra missing <<<"$(missing_packages "${1:-}")"
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# playwright-core for the browser tests (package-lock.json pins it; reinstalled only when
# the lock changed). Needs ensure_packages browser first.
ensure_npm_tools() {
    if ! cmp -s "$ROOT/tests/web/package-lock.json" "$ROOT/tests/web/node_modules/.installed-lock" 2>/dev/null; then
        log "installing playwright-core (npm ci in tests/web)"
        (cd "$ROOT/tests/web" && npm ci --no-audit --no-fund --loglevel=error &&
            cp package-lock.json node_modules/.installed-lock)
    fi
}

# Step timings. `timed NAME COMMAND...` runs COMMAND and appends "NAME<TAB>seconds" to
# $STEP_TIMES (when set: one file for a whole run, so .ci/run and scripts/test.sh add to
# the same table); `print_times` prints the table.
timed() {
    local name="$1" started
    shift
    started=$(date +%s)
    "$@"
    if [ -n "${STEP_TIMES:-}" ]; then
        printf '%s\t%s\n' "$name" "$(( $(date +%s) - started ))" >>"$STEP_TIMES"
    fi
}
print_times() {
    [ -s "${STEP_TIMES:-}" ] || return 0
    log "step durations:"
    # A step that runs others (make test under .ci/run) is listed after them, with their sum.
    awk -F'\t' '{ printf "  %-64s %5d s\n", $1, $2 }' "$STEP_TIMES" >&2
}

# A folder for service state: under the repo when the postgres user can enter it
# (initdb refuses to run as root), otherwise under the system temp directory.
state_dir() {
    local name="$1"
    local dir="$ROOT/.local/$name"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
        dir="${TMPDIR:-/tmp}/chatroom-lambda-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)/$name"
    fi
    mkdir -p "$dir"
    echo "$dir"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

run_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres DATA_DIR PORT
start_postgres() {
    local data="$1" port="$2" bin
    bin="$(pg_bindir)"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data" "$(dirname "$data")"
        run_pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    fi
    if run_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "PostgreSQL already running from $data (left running)"
        return
    fi
    port_busy "$port" && die "port $port is taken by another program; set PG_PORT to a free port"
    run_pg "$bin/pg_ctl" -D "$data" -l "$data/../postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off -c max_connections=300 ${PG_EXTRA_OPTS:-}" \
        start >/dev/null || { tail -20 "$data/../postgres.log" >&2; die "PostgreSQL did not start"; }
    STARTED_PG+=("$data")
    log "PostgreSQL on 127.0.0.1:$port"
}

# start_redis STATE_DIR PORT
start_redis() {
    local dir="$1" port="$2"
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
            log "Redis already running on $port (left running)"
            return
        fi
        die "port $port is taken by another program; set REDIS_PORT to a free port"
    fi
    port_busy "$port" && die "port $port is taken by another program; set REDIS_PORT to a free port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    for _ in $(seq 50); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG || die "Redis did not start (see $dir/redis.log)"
    STARTED_PIDS+=("$(cat "$dir/redis.pid")")
    log "Redis on 127.0.0.1:$port"
}

# start_redis_cluster STATE_DIR FIRST_PORT: a Redis Cluster of three primaries on
# FIRST_PORT..FIRST_PORT+2 (each also listens on its port + 10000, the cluster bus, so
# FIRST_PORT must be 55533 or lower), slots spread over the three.
start_redis_cluster() {
    local dir="$1" first="$2" port nodes=()
    [ "$first" -le 55533 ] || die "cluster ports must be <= 55535 (the bus is port + 10000); set TEST_REDIS_CLUSTER_PORT"
    for port in "$first" $((first + 1)) $((first + 2)); do
        port_busy "$port" && die "port $port is taken by another program; set TEST_REDIS_CLUSTER_PORT to a free port"
        mkdir -p "$dir/$port"
        rm -f "$dir/$port/nodes.conf"
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --dir "$dir/$port" --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" >/dev/null
        for _ in $(seq 50); do
            redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
        STARTED_PIDS+=("$(cat "$dir/$port/redis.pid")")
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
        || { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
    for _ in $(seq 100); do
        redis-cli -p "$first" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done
    redis-cli -p "$first" cluster info | grep -q 'cluster_state:ok' || die "the Redis Cluster did not come up"
    log "Redis Cluster (3 shards) on 127.0.0.1:$first-$((first + 2))"
}

stop_started() {
    local bin pid data
    bin="$(pg_bindir)"
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for data in "${STARTED_PG[@]}"; do
        run_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    done
    STARTED_PIDS=()
    STARTED_PG=()
}

# ensure_venv NAME CHECK_BINARY PACKAGE...: a virtualenv under .local/ holding PACKAGEs,
# installed from PyPI unless CHECK_BINARY is already there. One per tool family, since
# aws-sam-cli, moto and schemathesis pin conflicting versions.
ensure_venv() {
    local venv="$ROOT/.local/$1" check="$2"
    shift 2
    if [ ! -x "$venv/bin/$check" ]; then
        log "installing $* into $venv (PyPI)"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            apt_install python3-venv
            python3 -m venv "$venv"
        fi
        # PyPI (or the proxy in front of it) sometimes stalls mid-download, and the
        # make test installs run side by side: retry the whole install before giving up.
        local attempt
        for attempt in 1 2 3; do
            "$venv/bin/pip" install -q --disable-pip-version-check --retries 10 "$@" && return 0
            log "installing $* failed (attempt $attempt of 3)"
            sleep $((attempt * 10))
        done
        die "installing $* from PyPI failed three times"
    fi
}

# The AWS emulator (moto: SQS and DynamoDB).
ensure_moto() { ensure_venv venv moto_server 'moto[server]>=5,<6'; }

# The AWS emulator that deploys the stack (scripts/emulator.sh). Pinned: it changes weekly;
# the SAM transform runs inside it (aws-sam-translator).
ensure_ministack() { ensure_venv venv-ministack ministack 'ministack==1.5.33' 'aws-sam-translator==1.115.0'; }

# The policy check of the translated template (scripts/checkov.yaml).
ensure_checkov() { ensure_venv venv-checkov checkov 'checkov>=3.2,<4'; }

# start_moto STATE_DIR PORT
start_moto() {
    local dir="$1" port="$2"
    port_busy "$port" && die "port $port is taken by another program; set MOTO_PORT to a free port"
    "$ROOT/.local/venv/bin/python" "$ROOT/scripts/moto_serial.py" 127.0.0.1 "$port" >"$dir/moto.log" 2>&1 &
    STARTED_PIDS+=("$!")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 || die "moto did not start (see $dir/moto.log)"
    log "moto (SQS, DynamoDB) on 127.0.0.1:$port"
}

# Template linters and cargo-lambda (on PATH afterwards).
ensure_tools() {
    ensure_venv venv-tools cargo-lambda cfn-lint aws-sam-cli cargo-lambda
    export PATH="$ROOT/.local/venv-tools/bin:$PATH"
}

# schemathesis (contract fuzzing).
ensure_schemathesis() { ensure_venv venv-fuzz schemathesis 'schemathesis>=4,<5'; }

# fresh_postgres DATA_DIR PORT: an empty cluster (any earlier one in DATA_DIR is discarded).
fresh_postgres() {
    local data="$1" port="$2"
    if [ -f "$data/postmaster.pid" ]; then
        run_pg "$(pg_bindir)/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$data"
    start_postgres "$data" "$port"
}
