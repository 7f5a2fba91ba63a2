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

# Starts `modelgate-loadtest upstream` (a fast fixed 200) pinned to a CPU.
start_upstream() { # cpu port
    local i
    taskset -c "$1" "$LOADTEST" upstream --listen "$HOST:$2" >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!) SIGS+=(TERM) NAMES+=(upstream)
    for ((i = 0; i < 150; i++)); do
        grep -q '^listening on ' "$WORK/upstream.log" 2>/dev/null && return 0
        check_alive "starting"
        sleep 0.1
    done
    die "upstream did not start within 15s"
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
