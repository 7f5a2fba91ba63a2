# Shared by the benchmark scripts (sourced): process bookkeeping, waiting for servers,
# reading numbers out of JSON reports. The caller sets BENCH_NAME and HOST, then calls
# bench_start, which makes $WORK and stops every started server on exit.

die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}

# Makes the work directory and installs the cleanup traps.
bench_start() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/modelgate-bench.XXXXXX")
    chmod 755 "$WORK" # nginx workers may run as an unprivileged user
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

PIDS=() # started servers, stopped in reverse order on exit
SIGS=() # their fast-shutdown signal

stop_pid() { # pid signal
    local pid=$1 sig=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" "${SIGS[i]}"
    done
    if ((rc != 0)); then
        echo "$BENCH_NAME: failed (exit $rc); logs in $WORK:" >&2
        for f in "$WORK"/*.log "$WORK"/nginx/error.log; do
            [[ -s $f ]] || continue
            echo "--- $f (last 20 lines)" >&2
            tail -n 20 "$f" >&2
        done
        echo "$BENCH_NAME: keeping $WORK for inspection" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}

NAMES=() # what each pid is, for messages

# Dies if a started server has exited, saying how (exit status or signal).
check_alive() {
    local i st
    for i in "${!PIDS[@]}"; do
        kill -0 "${PIDS[i]}" 2>/dev/null && continue
        st=0
        wait "${PIDS[i]}" 2>/dev/null || st=$?
        if ((st > 128)); then
            st="signal $((st - 128)) ($(kill -l $((st - 128)) 2>/dev/null || echo '?'))"
        else
            st="exit status $st"
        fi
        die "${NAMES[i]} (pid ${PIDS[i]}) died: $st${1:+ ($1)}"
    done
}

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Dies if any of the given ports on $HOST is taken.
check_ports_free() {
    local port
    for port in "$@"; do
        if port_in_use "$port"; then
            die "port $HOST:$port is already in use (set BASE_PORT to move all ports)"
        fi
    done
}

wait_http() { # url expected-status description
    local i code
    for ((i = 0; i < 150; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)
        [[ $code == "$2" ]] && return 0
        check_alive "while waiting for $3"
        sleep 0.1
    done
    die "$3 did not answer $2 at $1 within 15s (last status: ${code:-none})"
}

json_num() { # json key -> first numeric value of "key":
    sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$1" | head -1
}

# Builds the release gateway and load generator; sets MODELGATE and LOADTEST.
build_release() {
    echo "$BENCH_NAME: cargo build --release -p modelgate -p modelgate-loadtest" >&2
    cargo build --release -p modelgate -p modelgate-loadtest >&2
    MODELGATE=$TARGET_DIR/release/modelgate
    LOADTEST=$TARGET_DIR/release/modelgate-loadtest
    [[ -x $MODELGATE ]] || die "not found after build: $MODELGATE"
    [[ -x $LOADTEST ]] || die "not found after build: $LOADTEST"
}

# A KServe v2 answer of the bundled digits model to one row (what the `guarded` route's
# extraction guard reads and hardens).
V2_ANSWER='{"model_name":"digits","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,10],"data":[0.0012,0.0003,0.9871,0.0021,0.0005,0.0011,0.0009,0.0034,0.0026,0.0008]},{"name":"label","datatype":"INT64","shape":[1],"data":[2]}]}'

# Starts `modelgate-loadtest upstream` (a fast fixed 200) pinned to a CPU; its body is
# `{"ok":true}` unless a third argument gives another. UPSTREAM_RT=1 runs it at real-time
# priority (SCHED_FIFO 50, needs root), so that it preempts the load generator sharing its
# CPU at once instead of waiting for the scheduler's time slice (milliseconds at p99).
start_upstream() { # cpu port [body]
    local i args=() rt=()
    [[ -n ${3:-} ]] && args+=(--body "$3")
    [[ ${UPSTREAM_RT:-0} == 1 ]] && rt=(chrt -f 50)
    taskset -c "$1" "${rt[@]}" "$LOADTEST" upstream --listen "$HOST:$2" "${args[@]}" >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!) SIGS+=(TERM) NAMES+=(upstream)
    for ((i = 0; i < 150; i++)); do
        grep -q '^listening on ' "$WORK/upstream.log" 2>/dev/null && return 0
        check_alive "starting"
        sleep 0.1
    done
    die "upstream did not start within 15s"
}

# Writes the benchmark gateway's config to $WORK/modelgate.toml (shared by bench-baseline.sh
# and profile.sh) and a random HS256 secret to $WORK/jwt.secret. One Pingora thread, no
# config watcher or upstream health checks (background work on the measured core). Routes
# to the upstream on $HOST:upstream-port that differ by one stage each: /fast and /open
# public, /auth an API key (the `internal` plan is unlimited: no limiter), /jwt a JWT from
# issuer `bench` (HS256; verified once, then from the verified-token cache), /authlim an
# API key + rate limit (the `bench` plan, never reached), model `valid` v2 validation only,
# model `full` API key + rate limit + validation, model `guarded` the same plus extraction
# detection (the shipped digits profile; the upstream must answer v2, see V2_ANSWER); and
# the embedded `digits` model, public.
write_bench_config() { # listen-port admin-port upstream-port
    local up="http://$HOST:$3" route
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/jwt.secret"
    sed 's/^  "name": "digits",$/  "name": "served",/' "$ROOT/models/digits.json" >"$WORK/served.json"
    grep -q '^  "name": "served",$' "$WORK/served.json" || die "cannot write the served model's metadata"
    {
        cat <<EOF
# Generated by scripts/$BENCH_NAME.sh
[server]
listen = "$HOST:$1"
admin_listen = "$HOST:$2"
threads = 1
pid_file = "$WORK/modelgate.pid"
upgrade_sock = "$WORK/modelgate_upgrade.sock"
grace_period = "1s"
watch = false
upstream_checks = false

[inference]
threads = 1
queue_depth = 256

[auth]
key_store = "$WORK/keys.json"

[[auth.jwt]]
issuer = "bench"
audiences = ["modelgate"]
algorithms = ["HS256"]
hmac_secret_file = "$WORK/jwt.secret"

[plans.bench]
rate = "100000000/s"
burst = 100000000

[plans.internal]
unlimited = true

[[routes]]
name = "digits"
model = "digits"
public = true
[routes.embedded]
onnx = "$ROOT/models/digits.onnx"
metadata = "$ROOT/models/digits.json"
EOF
        for route in fast:public open:public auth jwt authlim; do
            printf '\n[[routes]]\nname = "%s"\npath_prefix = "/%s"\n' "${route%%:*}" "${route%%:*}"
            [[ $route == *:public ]] && printf 'public = true\n'
            printf '[routes.http]\nupstreams = ["%s"]\n' "$up"
        done
        # The full pipeline in front of the embedded model: the digits model served as
        # `served` (its metadata under that name), keyed, rate-limited, with extraction.
        printf '\n[[routes]]\nname = "served"\nmodel = "served"\n'
        printf '[routes.embedded]\nonnx = "%s"\nmetadata = "%s"\n' "$ROOT/models/digits.onnx" "$WORK/served.json"
        printf '[routes.extraction]\nprofile = "%s"\n' "$ROOT/models/digits.profile.json"
        for route in valid:public full guarded; do
            printf '\n[[routes]]\nname = "%s"\nmodel = "%s"\n' "${route%%:*}" "${route%%:*}"
            [[ $route == *:public ]] && printf 'public = true\n'
            printf '[routes.validate]\nmetadata = "%s"\n[routes.http]\nupstreams = ["%s"]\n' \
                "$ROOT/models/digits.json" "$up"
            if [[ $route == guarded ]]; then
                printf '[routes.extraction]\nprofile = "%s"\n' "$ROOT/models/digits.profile.json"
            fi
        done
    } >"$WORK/modelgate.toml"
}

# Starts `modelgate serve` pinned to $PROXY_CPU (RUST_LOG=warn: no access log), registers it
# for cleanup (SIGINT: Pingora's fast shutdown; SIGTERM would wait for the grace period) and
# waits until its admin listener answers `probe` (default /healthz). Sets GATEWAY_PID.
start_gateway() { # config admin-port name [probe]; GATEWAY_BIN overrides the binary
    RUST_LOG=warn taskset -c "$PROXY_CPU" "${GATEWAY_BIN:-$MODELGATE}" serve --config "$1" >"$WORK/$3.log" 2>&1 &
    GATEWAY_PID=$!
    PIDS+=("$GATEWAY_PID") SIGS+=(INT) NAMES+=("$3")
    wait_http "http://$HOST:$2${4:-/healthz}" 200 "$3 admin"
}

# Renders bench/nginx.conf.template into $WORK/nginx/ (own prefix, config, pid and error
# log; foreground) and sets NGINX_ARGS to the arguments that run it.
write_nginx_config() { # listen-port upstream-port
    mkdir -p "$WORK/nginx/tmp"
    sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@LISTEN@|$HOST:$1|g" -e "s|@UPSTREAM@|$HOST:$2|g" \
        "$ROOT/bench/nginx.conf.template" >"$WORK/nginx/nginx.conf"
    NGINX_ARGS=(-p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log")
}

# An HS256 token for write_bench_config's issuer `bench`, valid for a day: consumer
# `jwt-bench`, the unlimited `internal` plan, scope `jwt` (the /jwt route). Needs openssl.
bench_jwt() {
    local head body sig
    b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
    head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
    body=$(printf '{"iss":"bench","aud":"modelgate","sub":"jwt-bench","plan":"internal","scope":"jwt","exp":%d}' \
        $(($(date +%s) + 86400)) | b64url)
    sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -hmac "$(cat "$WORK/jwt.secret")" -binary | b64url)
    echo "$head.$body.$sig"
}

# Resident set size of a process, in KiB.
rss_kib() { # pid
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# CPU time (user + system, in µs) that a process and its direct children have used so far.
cpu_us() { # pid
    local p ticks=0 t
    for p in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
        ticks=$((ticks + ${t:-0}))
    done
    echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# CPU µs per request between two cpu_us readings ("NA" without a reading or requests).
cpu_per_request() { # before after requests
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (a == "" || n + 0 == 0) print "NA"; else printf "%.2f\n", (b - a) / n }'
}

# A number rounded to an integer ("NA" stays).
fmt_int() { awk -v v="$1" 'BEGIN { if (v == "NA" || v == "") print "NA"; else printf "%.0f\n", v }'; }
