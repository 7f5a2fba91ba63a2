#!/usr/bin/env bash
# Where the gateway's CPU goes, per request, counted in instructions by callgrind (exact
# and repeatable on a noisy machine, unlike wall-clock profiles). The release gateway runs
# under `valgrind --tool=callgrind`; after WARMUP requests the counters are zeroed, then
# REQUESTS requests of the chosen path are sent and the counters dumped.
#
#   PATH_KIND=full     API key + rate limit + v2 validation (64 features) -> fast upstream
#   PATH_KIND=guarded  the same plus extraction detection; the upstream answers v2 (V2_ANSWER)
#   PATH_KIND=embedded the guarded checks in front of the embedded digits model (no upstream)
#   PATH_KIND=routing  public path-prefix route, no checks -> fast upstream
#   PATH_KIND=auth     path-prefix route with API key auth only (an unlimited plan)
#   PATH_KIND=nginx    nginx (bench/nginx.conf.template, master_process off) proxy_pass
#                      -> fast upstream, the same body: the reference, counted the same way
#
# Report: instructions per request in total and inclusive per pipeline stage, and the
# functions with the most self instructions. Written to OUT (default
# target/profile-<kind>.md); the raw callgrind file is kept next to it.
#
# PROFILER=perf instead samples where the time goes at saturation, kernel included (what
# callgrind cannot see): the server pinned to CPU 0, `modelgate-loadtest` closed loop (64
# connections) on CPU 1 for DURATION seconds, `perf record -e cpu-clock` on the server.
# Report: req/s, server CPU µs per request, the time split by binary (kernel, gateway,
# libc) and the top symbols; the raw perf.data is kept next to it (target/perf-<kind>.md).
#
# PERF_CALLGRAPH=1 also records call graphs (`perf report -g` on the kept perf.data).
# RATE=N (perf only) loads the server open loop at N req/s instead of closed loop: the CPU
# per request when requests arrive one by one rather than in bursts. UPSTREAM_RT=1 runs the
# upstream at real-time priority (see bench-lib.sh `start_upstream`).
# SYSCALLS=1 (perf only) also counts the server's system calls over the same window
# (`perf stat` on the syscall tracepoints): how many per request, and of which kind.
#
# Knobs: PATH_KIND=full PROFILER=callgrind REQUESTS=20000 WARMUP=2000 DURATION=10
#        PERF_CALLGRAPH RATE SYSCALLS UPSTREAM_RT BASE_PORT=19500 OUT CARGO_TARGET_DIR
# Needs: valgrind (callgrind_annotate, callgrind_control) or perf and taskset, cargo, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=profile
# shellcheck source=bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

PATH_KIND=${PATH_KIND:-full}
PROFILER=${PROFILER:-callgrind}
REQUESTS=${REQUESTS:-20000}
WARMUP=${WARMUP:-2000}
DURATION=${DURATION:-10}
BASE_PORT=${BASE_PORT:-19500}
case $PROFILER in
    callgrind) OUT=${OUT:-target/profile-$PATH_KIND.md} tools=(valgrind callgrind_annotate callgrind_control) ;;
    perf) OUT=${OUT:-target/perf-$PATH_KIND.md} tools=(perf taskset) ;;
    *) die "PROFILER must be callgrind or perf" ;;
esac
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HOST=127.0.0.1
SAMPLES=$ROOT/models/digits_holdout.json

[[ $PATH_KIND =~ ^(full|guarded|embedded|routing|auth|nginx)$ ]] ||
    die "PATH_KIND must be full, guarded, embedded, routing, auth or nginx"
[[ -z ${RATE:-} || $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive integer"
for knob in REQUESTS WARMUP DURATION BASE_PORT; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer"
done
for tool in "${tools[@]}" cargo curl; do
    command -v "$tool" >/dev/null 2>&1 || die "missing: $tool (scripts/install-deps.sh --bench)"
done

UPSTREAM_PORT=$((BASE_PORT + 1))
GATEWAY_PORT=$((BASE_PORT + 80))
ADMIN_PORT=$((BASE_PORT + 1090))

build_release
bench_start
check_ports_free "$UPSTREAM_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"
start_upstream 1 "$UPSTREAM_PORT" "$([[ $PATH_KIND == guarded ]] && echo "$V2_ANSWER")"

write_bench_config "$GATEWAY_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT" # bench-lib.sh
KEY=$("$MODELGATE" keys issue --config "$WORK/modelgate.toml" --consumer bench --plan bench --models full,guarded,served 2>/dev/null) ||
    die "cannot issue the API key"
AUTH_KEY=$("$MODELGATE" keys issue --config "$WORK/modelgate.toml" --consumer internal --plan internal --models auth 2>/dev/null) ||
    die "cannot issue the API key"

if [[ $PROFILER == perf ]]; then
    launch=(taskset -c 0)
else
    launch=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p")
fi
if [[ $PATH_KIND == nginx ]]; then
    write_nginx_config "$GATEWAY_PORT" "$UPSTREAM_PORT" # bench-lib.sh
    # One process (no master), so callgrind sees the worker that does the work.
    "${launch[@]}" nginx "${NGINX_ARGS[@]}" -g "master_process off;" >"$WORK/server.log" 2>&1 &
    ready_url=http://$HOST:$GATEWAY_PORT/open/ready
else
    RUST_LOG=warn "${launch[@]}" "$MODELGATE" serve --config "$WORK/modelgate.toml" >"$WORK/server.log" 2>&1 &
    ready_url=http://$HOST:$ADMIN_PORT/healthz
fi
SERVER_PID=$!
PIDS+=("$SERVER_PID") SIGS+=(INT) NAMES+=("$PATH_KIND server")
for ((i = 0; i < 600; i++)); do # valgrind starts slowly
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$ready_url" || true) == 200 ]] && break
    check_alive "starting under $PROFILER"
    sleep 0.2
done

case $PATH_KIND in
    full | guarded) url=http://$HOST:$GATEWAY_PORT/v2/models/$PATH_KIND/infer args=(--header "x-api-key: $KEY") ;;
    embedded) url=http://$HOST:$GATEWAY_PORT/v2/models/served/infer args=(--header "x-api-key: $KEY") ;;
    auth) url=http://$HOST:$GATEWAY_PORT/auth/v2/models/full/infer args=(--header "x-api-key: $AUTH_KEY") ;;
    routing | nginx) url=http://$HOST:$GATEWAY_PORT/open/v2/models/full/infer args=() ;;
esac
send() { # requests -> the loadtest JSON report
    # Open loop at a rate the gateway keeps up with under callgrind; duration = n / rate.
    local n=$1 rate=500
    "$LOADTEST" run --url "$url" --samples "$SAMPLES" "${args[@]}" --connections 8 --rate "$rate" \
        --duration "$(((n + rate - 1) / rate))s" --timeout 30s --json 2>>"$WORK/loadtest.err" | grep '^{' | tail -1
}
if [[ $PROFILER == perf ]]; then
    saturate() { # seconds -> the loadtest JSON report
        taskset -c 1 "$LOADTEST" run --url "$url" --samples "$SAMPLES" "${args[@]}" --connections 64 \
            ${RATE:+--rate "$RATE"} --duration "${1}s" --json 2>>"$WORK/loadtest.err" | grep '^{' | tail -1
    }
    load="closed loop"
    if [[ -n ${RATE:-} ]]; then load="open loop at $RATE req/s"; fi
    saturate 2 >/dev/null
    cpu0=$(cpu_us "$SERVER_PID")
    perf record -e cpu-clock -F 2000 ${PERF_CALLGRAPH:+-g} -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep "$DURATION" \
        >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    if [[ -n ${SYSCALLS:-} ]]; then
        # The kinds a proxy makes per request; whatever else shows up only in the total.
        kinds=$(perf list 2>/dev/null | grep -oE 'syscalls:sys_enter_(read|write|readv|writev|recvfrom|sendto|recvmsg|sendmsg|epoll_wait|epoll_pwait|epoll_ctl|futex|getsockopt|setsockopt|accept4|close|sched_yield)\b' | sort -u | paste -sd,)
        perf stat -x, -e "raw_syscalls:sys_enter${kinds:+,$kinds}" -p "$SERVER_PID" -o "$WORK/syscalls.csv" -- sleep "$DURATION" \
            >"$WORK/perf-stat.log" 2>&1 &
        STAT_PID=$!
    fi
    json=$(saturate "$DURATION")
    cpu1=$(cpu_us "$SERVER_PID")
    wait "$PERF_PID" || die "perf record failed: $(tail -3 "$WORK/perf.log")"
    if [[ -n ${SYSCALLS:-} ]]; then
        wait "$STAT_PID" || die "perf stat failed: $(tail -3 "$WORK/perf-stat.log")"
    fi
    completed=$(json_num "$json" completed)
    ok=$(json_num "$(grep -o '"statuses":{[^}]*}' <<<"$json")" 200)
    [[ ${ok:-0} -gt 0 ]] || die "no 200 responses: $json"
    mkdir -p "$(dirname "$OUT")"
    cp "$WORK/perf.data" "${OUT%.md}.perf.data"
    report=$(
        echo "## modelgate time profile (perf, cpu-clock): $PATH_KIND path"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "- command: \`PROFILER=perf PATH_KIND=$PATH_KIND DURATION=$DURATION${RATE:+ RATE=$RATE}${PERF_CALLGRAPH:+ PERF_CALLGRAPH=1}${SYSCALLS:+ SYSCALLS=1}$([[ ${UPSTREAM_RT:-0} == 1 ]] && echo " UPSTREAM_RT=1") scripts/profile.sh\`"
        echo "- server pinned to CPU 0, modelgate-loadtest $load (64 connections) on CPU 1"
        echo "- $completed requests in ${DURATION}s ($ok answered 200): $(json_num "$json" rps) req/s"
        echo "- server CPU (user + system): $(cpu_per_request "$cpu0" "$cpu1" "$completed") µs per request"
        if [[ -n ${SYSCALLS:-} ]]; then
            echo "- system calls per request (\`perf stat\` over the same ${DURATION}s):" \
                "$(awk -F, -v n="$completed" '$3 ~ /sys_enter/ && $1 > 0 {
                    name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"
                    printf "%s%s %.2f", sep, name, $1 / n; sep = ", " }' "$WORK/syscalls.csv")"
        fi
        echo
        echo "Time by binary:"
        echo
        echo '```'
        perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
        echo '```'
        echo
        echo "Top symbols (self time):"
        echo
        echo '```'
        perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort sym 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -30 | cut -c1-160
        echo '```'
    )
    echo "$report" >"$OUT"
    echo "$report"
    echo "$BENCH_NAME: report written to $OUT (raw: ${OUT%.md}.perf.data)" >&2
    exit 0
fi

send "$WARMUP" >/dev/null
callgrind_control -z "$SERVER_PID" >/dev/null
json=$(send "$REQUESTS")
callgrind_control -d "$SERVER_PID" >/dev/null
completed=$(json_num "$json" completed)
ok=$(json_num "$(grep -o '"statuses":{[^}]*}' <<<"$json")" 200)
[[ ${ok:-0} -gt 0 ]] || die "no 200 responses: $json"
sleep 1
dump=$(ls -t "$WORK"/callgrind.out.* | head -1)
mkdir -p "$(dirname "$OUT")"
cp "$dump" "${OUT%.md}.callgrind"

inclusive=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null)
self=$(callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null)
total=$(awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1; exit}' <<<"$inclusive")
per_request() { awk -v ir="$1" -v n="$completed" 'BEGIN { printf "%.0f\n", ir / n }'; }
# Inclusive instructions of the first function whose name matches the pattern.
stage() { # pattern
    awk -v pat="$1" 'index($0, pat) && $1 ~ /^[0-9,]+$/ {gsub(/,/, "", $1); print $1; exit}' <<<"$inclusive"
}

report=$(
    echo "## modelgate instruction profile: $PATH_KIND path"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- command: \`PATH_KIND=$PATH_KIND REQUESTS=$REQUESTS WARMUP=$WARMUP scripts/profile.sh\`"
    echo "- $completed requests ($ok answered 200) after $WARMUP warm-up requests; 8 keep-alive connections"
    echo "- total: $(per_request "$total") instructions per request (whole process: gateway threads, Pingora, allocator, kernel-call wrappers)"
    echo
    [[ $PATH_KIND == nginx ]] && echo "(nginx: one process, \`master_process off\`; no stages to attribute.)"
    [[ $PATH_KIND == nginx ]] || echo "| stage (inclusive) | function | instructions / request | share |"
    [[ $PATH_KIND == nginx ]] || echo "|---|---|---:|---:|"
    [[ $PATH_KIND == nginx ]] || for row in "whole pipeline, from routing to last response byte (refusals written after)|modelgate::pipeline::run::{{closure}} [" \
        "route lookup|RouteIndex::resolve" \
        "credential extraction|Authenticator::credential" \
        "API key verification (SHA-256, constant-time compare)|KeyVerifier::verify" \
        "v2 validation, parsed once (JSON parse included)|modelgate_plugins::schema::validate_infer" \
        "rate limit (GCRA + quota + in-flight)|modelgate_plugins::ratelimit::Limiter<" \
        "upstream request header (incl. traceparent)|HttpUpstreams::upstream_request" \
        "upstream reads (socket read, its timer)|upstream_http1::Connection::read_more::{{closure}} [" \
        "upstream response head parse|upstream_http1::parse_head" \
        "access log + metrics|Responder>::log [" \
        "allocator: mi_malloc|mi_malloc" \
        "memcpy (all callers)|__memcpy_avx_unaligned_erms"; do
        label=${row%%|*} pat=${row#*|}
        ir=$(stage "$pat")
        if [[ -n $ir ]]; then
            printf '| %s | `%s` | %s | %s |\n' "$label" "$pat" "$(per_request "$ir")" \
                "$(awk -v a="$ir" -v t="$total" 'BEGIN { printf "%.1f%%\n", 100 * a / t }')"
        else
            printf '| %s | `%s` | — | — |\n' "$label" "$pat"
        fi
    done
    echo
    echo "Top functions by self instructions:"
    echo
    echo '```'
    # (callgrind_annotate lists thread entry points with their whole cost first; skip them)
    awk '$1 ~ /^[0-9,]+$/ && $2 !~ /^\((100\.0|99\.)/ {print; if (++k == 25) exit}' <<<"$self" | cut -c1-200
    echo '```'
)
echo "$report" >"$OUT"
echo "$report"
echo "$BENCH_NAME: report written to $OUT (raw: ${OUT%.md}.callgrind)" >&2
