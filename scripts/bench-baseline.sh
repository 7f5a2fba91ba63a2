#!/usr/bin/env bash
# Baseline throughput/latency of modelgate next to a direct upstream and nginx, measured
# side by side in one run (see docs/BENCHMARKS.md).
#
#   (a) direct     load generator -> `modelgate-loadtest upstream`
#   (b) modelgate  load generator -> modelgate (path_prefix route, threads = 1) -> upstream
#   (c) nginx      load generator -> nginx proxy_pass (worker_processes 1, keepalive 64) -> upstream
#   (d) embedded   modelgate-loadtest -> modelgate /v2/models/digits/infer, batch 1 and 32
#   (e) stages     one POST v2 body (1 x 64 features) through routes that differ by one stage:
#                  routing only, API key, JWT (HS256, cached), API key + rate limit,
#                  v2 validation, all of them; and nginx
#   (f) open loop  the POST body at half of the full pipeline's measured saturation rate:
#                  direct, modelgate routing only, full pipeline, nginx; p99 added latency
#
# Pinning: the proxy under test (modelgate or nginx, all its threads) on core PROXY_CPU (0);
# the load generator and the upstream on core LOAD_CPU (1). 64 keep-alive connections.
# (a)-(c) are measured with wrk and with `modelgate-loadtest run` (closed loop);
# every measurement is repeated ROUNDS times, interleaved, and the medians are reported.
#
# Environment knobs:
#   DURATION=10        seconds per measurement
#   ROUNDS=3           interleaved rounds (medians over these)
#   WARMUP=2           seconds of unrecorded load per target before round 1 (0 = none)
#   CONNECTIONS=64     keep-alive connections
#   PROXY_CPU=0        core for the proxy under test
#   LOAD_CPU=1         core for the load generator and the upstream
#   BASE_PORT=18000    loopback ports BASE_PORT+1 (upstream), +80 (modelgate),
#                      +81 (nginx), +1090 (modelgate admin)
#   OUT=target/bench-baseline.md   where the markdown report is written
#   CARGO_TARGET_DIR   respected (default: <repo>/target)
#
# Needs: cargo, nginx, wrk, taskset, curl, openssl (scripts/install-deps.sh --bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench-lib.sh
BENCH_NAME=bench-baseline
source "$ROOT/scripts/bench-lib.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18000}
OUT=${OUT:-target/bench-baseline.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}


for knob in DURATION ROUNDS WARMUP CONNECTIONS PROXY_CPU LOAD_CPU BASE_PORT; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
done
((DURATION >= 1 && DURATION <= 3600)) || die "DURATION must be 1..3600 seconds"
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((WARMUP <= 600)) || die "WARMUP must be at most 600 seconds"
((CONNECTIONS >= 1 && CONNECTIONS <= 4096)) || die "CONNECTIONS must be 1..4096"
((BASE_PORT >= 1024 && BASE_PORT <= 60000)) || die "BASE_PORT must be 1024..60000"
((PROXY_CPU != LOAD_CPU)) || die "PROXY_CPU and LOAD_CPU must differ"

UPSTREAM_PORT=$((BASE_PORT + 1))
MODELGATE_PORT=$((BASE_PORT + 80))
NGINX_PORT=$((BASE_PORT + 81))
ADMIN_PORT=$((BASE_PORT + 1090))
HOST=127.0.0.1
SAMPLES=$ROOT/models/digits_holdout.json

# ---------------------------------------------------------------------------- checks

missing=()
for tool in cargo curl taskset nginx wrk awk openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]} -- run scripts/install-deps.sh --bench (and install Rust for cargo)"
fi
[[ -f $SAMPLES ]] || die "held-out samples not found: $SAMPLES"
[[ -f $ROOT/models/digits.onnx && -f $ROOT/models/digits.json ]] || die "models/digits.{onnx,json} missing"

allowed=$(taskset -pc $$ | sed 's/.*: *//')
for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
    taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (allowed: $allowed)"
done

# ---------------------------------------------------------------------------- header

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $commit != unknown && -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]]; then
    commit="$commit (dirty)"
fi
cpu_model=$(lscpu 2>/dev/null | grep 'Model name' | head -1 | sed 's/^Model name: *//')
header=(
    "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    "- git commit: $commit"
    "- nproc: $(nproc)"
    "- CPU: ${cpu_model:-unknown}"
    "- kernel: $(uname -srm)"
    "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    "- nginx: $( (nginx -v 2>&1 || true) | sed 's/^nginx version: //'), wrk: $( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')"
    "- pinning: proxy under test on CPU $PROXY_CPU; load generator + upstream on CPU $LOAD_CPU"
    "- parameters: DURATION=${DURATION}s ROUNDS=$ROUNDS WARMUP=${WARMUP}s CONNECTIONS=$CONNECTIONS"
)
echo "## modelgate baseline benchmark"
printf '%s\n' "${header[@]}"
echo

# ---------------------------------------------------------------------------- build

build_release

# ---------------------------------------------------------------------------- processes

bench_start
check_ports_free "$UPSTREAM_PORT" "$MODELGATE_PORT" "$NGINX_PORT" "$ADMIN_PORT"

# The fast upstream, on the load core.
start_upstream "$LOAD_CPU" "$UPSTREAM_PORT"

# modelgate: one process with the HTTP route (b), the embedded model (d) and the (e) routes
# (bench-lib.sh: write_bench_config).
write_bench_config "$MODELGATE_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT"
issue_key() { # consumer plan models
    "$MODELGATE" keys issue --config "$WORK/modelgate.toml" --consumer "$1" --plan "$2" --models "$3" 2>/dev/null ||
        die "cannot issue the benchmark API key for $1"
}
API_KEY=$(issue_key bench bench full,authlim)
KEY_UNLIMITED=$(issue_key internal internal auth)
JWT=$(bench_jwt)
start_gateway "$WORK/modelgate.toml" "$ADMIN_PORT" modelgate /readyz # bench-lib.sh
MODELGATE_PID=$GATEWAY_PID

# nginx: own prefix, config, pid and error log in $WORK; foreground (daemon off).
write_nginx_config "$NGINX_PORT" "$UPSTREAM_PORT" # bench-lib.sh
nginx -t -q "${NGINX_ARGS[@]}" >"$WORK/nginx-check.log" 2>&1 || die "nginx -t failed: $(cat "$WORK/nginx-check.log")"
taskset -c "$PROXY_CPU" nginx "${NGINX_ARGS[@]}" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID") SIGS+=(TERM) NAMES+=(nginx) # nginx master: SIGTERM = fast shutdown, workers included

URL_DIRECT=http://$HOST:$UPSTREAM_PORT/fast
URL_MODELGATE=http://$HOST:$MODELGATE_PORT/fast
URL_NGINX=http://$HOST:$NGINX_PORT/fast
URL_INFER=http://$HOST:$MODELGATE_PORT/v2/models/digits/infer
URL_OPEN=http://$HOST:$MODELGATE_PORT/open/v2/models/full/infer
URL_FULL=http://$HOST:$MODELGATE_PORT/v2/models/full/infer
URL_NGINX_POST=http://$HOST:$NGINX_PORT/open/v2/models/full/infer
URL_AUTH=http://$HOST:$MODELGATE_PORT/auth/v2/models/full/infer
URL_JWT=http://$HOST:$MODELGATE_PORT/jwt/v2/models/full/infer
URL_AUTHLIM=http://$HOST:$MODELGATE_PORT/authlim/v2/models/full/infer
URL_VALID=http://$HOST:$MODELGATE_PORT/v2/models/valid/infer

wait_http "$URL_DIRECT" 200 "upstream"
wait_http "$URL_MODELGATE" 200 "modelgate -> upstream"
wait_http "$URL_NGINX" 200 "nginx -> upstream"
infer_status=$(curl -s -o "$WORK/infer.json" -w '%{http_code}' --max-time 5 \
    -H 'content-type: application/json' \
    --data '{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}]}' \
    "$URL_INFER" || true)
[[ $infer_status == 200 ]] || die "infer smoke request answered ${infer_status:-nothing}: $(head -c 300 "$WORK/infer.json" 2>/dev/null)"
for check in "$URL_AUTH|x-api-key: $KEY_UNLIMITED" "$URL_JWT|authorization: Bearer $JWT" \
    "$URL_AUTHLIM|x-api-key: $API_KEY" "$URL_FULL|x-api-key: $API_KEY"; do
    status=$(curl -s -o "$WORK/check.json" -w '%{http_code}' --max-time 5 -H "${check#*|}" \
        -H 'content-type: application/json' --data '{"inputs":[]}' "${check%%|*}" || true)
    # 200 from the upstream, or 422 from validation: either way the credential passed.
    [[ $status == 200 || $status == 422 ]] || die "credential check at ${check%%|*} answered ${status:-nothing}: $(head -c 300 "$WORK/check.json")"
done

# The embedded path must compute real answers: check predicted labels against the
# held-out labels for 1s at batch 32 (expect the model's held-out accuracy, 0.969).
timeout 60 taskset -c "$LOAD_CPU" "$LOADTEST" run --url "$URL_INFER" --connections 4 --duration 1s \
    --samples "$SAMPLES" --batch 32 --check-labels --json >"$WORK/accuracy.json" 2>"$WORK/accuracy.log" ||
    die "label check against $URL_INFER failed: $(tail -5 "$WORK/accuracy.log")"
accuracy=$(json_num "$(grep '^{' "$WORK/accuracy.json" | tail -1)" accuracy)
[[ -n $accuracy ]] && accuracy=$(awk -v a="$accuracy" 'BEGIN { printf "%.3f\n", a }')
[[ -n $accuracy ]] || die "label check reported no accuracy: $(head -c 300 "$WORK/accuracy.json")"
header+=("- embedded model check: accuracy $accuracy on held-out rows at batch 32 (expected 0.969)")
echo "${header[-1]}"
echo

# ---------------------------------------------------------------------------- measuring

RESULTS=$WORK/results.tsv # tool target round rps p50_us p99_us errors
: >"$RESULTS"
mkdir -p "$WORK/raw"
RUN_TIMEOUT=$((DURATION + 60))

# "412.00us" / "1.23ms" / "2.00s" / "1.00m" -> microseconds (integer).
wrk_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "NA"; exit }
        printf "%d\n", n * f + 0.5 }'
}

# The proxy process behind a target (none for the upstream itself).
proxy_pid() { # target
    case $1 in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID" ;;
        *) echo "$MODELGATE_PID" ;;
    esac
}

run_wrk() { # target url round [seconds] [record]
    local target=$1 url=$2 round=$3 secs=${4:-$DURATION} record=${5:-1}
    local raw=$WORK/raw/wrk-$target-$round.txt proxy cpu0 cpu1=""
    proxy=$(proxy_pid "$target")
    check_alive "before wrk $target round $round"
    cpu0=${proxy:+$(cpu_us "$proxy")}
    timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" \
        wrk -t1 "-c$CONNECTIONS" "-d${secs}s" --latency "$url" >"$raw" 2>&1 ||
        die "wrk against $target failed: $(tail -5 "$raw")"
    [[ -n $proxy ]] && cpu1=$(cpu_us "$proxy")
    check_alive "during wrk $target round $round"
    ((record)) || return 0
    local rps p50 p99 non2xx sockerr cpu
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw")
    p50=$(wrk_us "$(awk '$1 == "50%" {print $2}' "$raw")")
    p99=$(wrk_us "$(awk '$1 == "99%" {print $2}' "$raw")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$raw")
    sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$raw")
    [[ -n $rps ]] || die "cannot parse wrk output: $raw"
    cpu=$(cpu_per_request "$cpu0" "$cpu1" "$(awk '/requests in/ {print $1}' "$raw")")
    printf 'wrk\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$rps" "$p50" "$p99" \
        $((${non2xx:-0} + ${sockerr:-0})) "$cpu" >>"$RESULTS"
    printf '  round %s  wrk               %-10s %10.0f req/s  p50 %6s us  p99 %6s us\n' \
        "$round" "$target" "$rps" "$p50" "$p99" >&2
}

run_lt() { # tool-label target url round [seconds] [record] [extra run args...]
    local label=$1 target=$2 url=$3 round=$4 secs=${5:-$DURATION} record=${6:-1}
    shift 6 || shift $#
    local raw=$WORK/raw/$label-$target-$round.json proxy cpu0 cpu1=""
    proxy=$(proxy_pid "$target")
    check_alive "before $label $target round $round"
    cpu0=${proxy:+$(cpu_us "$proxy")}
    timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" \
        "$LOADTEST" run --url "$url" --connections "$CONNECTIONS" --duration "${secs}s" --json "$@" \
        >"$raw" 2>"$raw.err" || die "modelgate-loadtest against $target failed: $(tail -5 "$raw.err")"
    [[ -n $proxy ]] && cpu1=$(cpu_us "$proxy")
    check_alive "during $label $target round $round"
    ((record)) || return 0
    local json rps p50 p99 lat statuses errs ok completed bad cpu
    json=$(grep '^{' "$raw" | tail -1)
    [[ -n $json ]] || die "no JSON report in $raw"
    rps=$(json_num "$json" rps)
    lat=$(grep -o '"latency_us":{[^}]*}' <<<"$json")
    p50=$(json_num "$lat" p50)
    p99=$(json_num "$lat" p99)
    statuses=$(grep -o '"statuses":{[^}]*}' <<<"$json" || true)
    ok=$(json_num "$statuses" 200)
    completed=$(json_num "$json" completed)
    errs=$(grep -o '"errors":{[^}]*}' <<<"$json" | grep -o '[0-9]\+' | awk '{s += $1} END {print s + 0}')
    bad=$((${completed:-0} - ${ok:-0} + errs))
    [[ -n $rps && -n $p50 ]] || die "cannot parse modelgate-loadtest report: $raw"
    cpu=$(cpu_per_request "$cpu0" "$cpu1" "$completed")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$target" "$round" "$rps" "$p50" "$p99" "$bad" "$cpu" >>"$RESULTS"
    printf '  round %s  %-17s %-10s %10.0f req/s  p50 %6s us  p99 %6s us\n' \
        "$round" "$label" "$target" "$rps" "$p50" "$p99" >&2
}

per_round=$((3 * 2 + 2 + 7 + 4))
est=$(((ROUNDS * per_round * (DURATION + 1) + 6 * WARMUP) / 60 + 1))
echo "bench-baseline: $ROUNDS rounds x $per_round measurements x ${DURATION}s (about $est min)" >&2

if ((WARMUP > 0)); then
    echo "bench-baseline: warmup ${WARMUP}s per target" >&2
    run_wrk direct "$URL_DIRECT" 0 "$WARMUP" 0
    run_wrk modelgate "$URL_MODELGATE" 0 "$WARMUP" 0
    run_wrk nginx "$URL_NGINX" 0 "$WARMUP" 0
    run_lt loadtest-b1 embedded "$URL_INFER" 0 "$WARMUP" 0 --samples "$SAMPLES" --batch 1
    run_lt loadtest-b32 embedded "$URL_INFER" 0 "$WARMUP" 0 --samples "$SAMPLES" --batch 32
fi

for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench-baseline: round $r/$ROUNDS" >&2
    run_wrk direct "$URL_DIRECT" "$r"
    run_wrk modelgate "$URL_MODELGATE" "$r"
    run_wrk nginx "$URL_NGINX" "$r"
    run_lt loadtest direct "$URL_DIRECT" "$r" "$DURATION" 1
    run_lt loadtest modelgate "$URL_MODELGATE" "$r" "$DURATION" 1
    run_lt loadtest nginx "$URL_NGINX" "$r" "$DURATION" 1
    run_lt loadtest-b1 embedded "$URL_INFER" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1
    run_lt loadtest-b32 embedded "$URL_INFER" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 32
    run_lt post open "$URL_OPEN" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1
    run_lt post auth "$URL_AUTH" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1 --header "x-api-key: $KEY_UNLIMITED"
    run_lt post jwt "$URL_JWT" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1 --header "authorization: Bearer $JWT"
    run_lt post authlim "$URL_AUTHLIM" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1 --header "x-api-key: $API_KEY"
    run_lt post valid "$URL_VALID" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1
    run_lt post full "$URL_FULL" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1 --header "x-api-key: $API_KEY"
    run_lt post nginx "$URL_NGINX_POST" "$r" "$DURATION" 1 --samples "$SAMPLES" --batch 1
done

# (f) Open loop at half of the full pipeline's saturation rate (its closed-loop median
# above): latency from intended send times, so queueing is not hidden.
OPEN_RATE=$(awk -F'\t' '$1 == "post" && $2 == "full" {print $4}' "$RESULTS" | sort -g |
    awk '{v[NR] = $1} END { if (NR == 0) print 0; else printf "%d\n", v[int((NR + 1) / 2)] / 2 }')
((OPEN_RATE > 0)) || die "no full-pipeline rate measured for the open-loop runs"
echo "bench-baseline: open loop at $OPEN_RATE req/s (half the full pipeline's closed-loop median)" >&2
URL_DIRECT_POST=http://$HOST:$UPSTREAM_PORT/open/v2/models/full/infer
for ((r = 1; r <= ROUNDS; r++)); do
    run_lt open direct "$URL_DIRECT_POST" "$r" "$DURATION" 1 --samples "$SAMPLES" --rate "$OPEN_RATE"
    run_lt open open "$URL_OPEN" "$r" "$DURATION" 1 --samples "$SAMPLES" --rate "$OPEN_RATE"
    run_lt open full "$URL_FULL" "$r" "$DURATION" 1 --samples "$SAMPLES" --rate "$OPEN_RATE" --header "x-api-key: $API_KEY"
    run_lt open nginx "$URL_NGINX_POST" "$r" "$DURATION" 1 --samples "$SAMPLES" --rate "$OPEN_RATE"
done

check_alive "at the end"

# ---------------------------------------------------------------------------- report

# median of column $col for rows tool/target
median() { # tool target column
    awk -F'\t' -v t="$1" -v g="$2" -v c="$3" '$1 == t && $2 == g && $c != "NA" {print $c}' "$RESULTS" |
        sort -g | awk '{v[NR] = $1} END {
            if (NR == 0) { print "NA"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
total() { # tool target column
    awk -F'\t' -v t="$1" -v g="$2" -v c="$3" '$1 == t && $2 == g {s += $c} END {print s + 0}' "$RESULTS"
}
rounds_list() { # tool target -> "141k / 139k / 140k"
    awk -F'\t' -v t="$1" -v g="$2" '$1 == t && $2 == g {printf "%s%.1fk", (n++ ? " / " : ""), $4 / 1000}' "$RESULTS"
}
fmt_rps() { awk -v v="$1" 'BEGIN { if (v == "NA") print "NA"; else printf "%.0f\n", v }'; }
fmt_lat() { # microseconds -> "123 µs" / "1.23 ms"
    awk -v v="$1" 'BEGIN {
        if (v == "NA") { print "NA"; exit }
        if (v < 1000) printf "%d µs\n", v + 0.5; else printf "%.2f ms\n", v / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "—"; else printf "%.2f×\n", a / b }'; }

table=$(
    echo "### Proxy overhead: GET /fast through each path (${CONNECTIONS} keep-alive connections)"
    echo
    echo "| path | load generator | req/s (median) | p50 | p99 | vs direct | vs nginx | proxy CPU µs / request | errors | req/s per round |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for tool in wrk loadtest; do
        tool_name="wrk -t1 -c$CONNECTIONS"
        [[ $tool == loadtest ]] && tool_name="modelgate-loadtest (closed)"
        d=$(median "$tool" direct 4)
        n=$(median "$tool" nginx 4)
        for target in direct modelgate nginx; do
            case $target in
                direct) label="(a) direct to upstream" ;;
                modelgate) label="(b) modelgate, threads = 1" ;;
                nginx) label="(c) nginx, worker_processes 1" ;;
            esac
            rps=$(median "$tool" "$target" 4)
            vs_direct=$(ratio "$rps" "$d")
            vs_nginx=$(ratio "$rps" "$n")
            [[ $target == direct ]] && vs_direct="1.00×"
            [[ $target == nginx ]] && vs_nginx="1.00×"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$tool_name" \
                "$(fmt_rps "$rps")" "$(fmt_lat "$(median "$tool" "$target" 5)")" \
                "$(fmt_lat "$(median "$tool" "$target" 6)")" "$vs_direct" "$vs_nginx" \
                "$(median "$tool" "$target" 8)" "$(total "$tool" "$target" 7)" "$(rounds_list "$tool" "$target")"
        done
    done
    echo
    echo "### (d) Embedded ONNX backend: POST /v2/models/digits/infer (held-out samples, modelgate-loadtest closed loop)"
    echo
    echo "| batch | req/s (median) | inferences/s | p50 | p99 | errors | req/s per round |"
    echo "|---:|---:|---:|---:|---:|---:|---|"
    for b in 1 32; do
        rps=$(median "loadtest-b$b" embedded 4)
        inf=$(awk -v v="$rps" -v b="$b" 'BEGIN { if (v == "NA") print "NA"; else print v * b }')
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$b" "$(fmt_rps "$rps")" "$(fmt_rps "$inf")" \
            "$(fmt_lat "$(median "loadtest-b$b" embedded 5)")" "$(fmt_lat "$(median "loadtest-b$b" embedded 6)")" \
            "$(total "loadtest-b$b" embedded 7)" "$(rounds_list "loadtest-b$b" embedded)"
    done
    echo
    echo "### (e) Stage by stage: POST v2 infer (1 × 64 features) to the fast upstream"
    echo
    echo "| path | req/s (median) | p50 | p99 | vs routing only | vs nginx | proxy CPU µs / request | CPU vs routing only | errors | req/s per round |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    o=$(median post open 4)
    n=$(median post nginx 4)
    oc=$(median post open 8)
    for target in open auth jwt authlim valid full nginx; do
        case $target in
            open) label="modelgate, public route, no checks (routing only)" ;;
            auth) label="modelgate, API key (unlimited plan: no limiter)" ;;
            jwt) label="modelgate, JWT HS256, verified-token cache (unlimited plan)" ;;
            authlim) label="modelgate, API key + rate limit" ;;
            valid) label="modelgate, public route + v2 validation" ;;
            full) label="modelgate, API key + rate limit + v2 validation" ;;
            nginx) label="nginx proxy_pass" ;;
        esac
        rps=$(median post "$target" 4)
        cpu=$(median post "$target" 8)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(fmt_rps "$rps")" \
            "$(fmt_lat "$(median post "$target" 5)")" "$(fmt_lat "$(median post "$target" 6)")" \
            "$(ratio "$rps" "$o")" "$(ratio "$rps" "$n")" "$cpu" "$(ratio "$cpu" "$oc")" \
            "$(total post "$target" 7)" "$(rounds_list post "$target")"
    done
    echo
    echo "### (f) Open loop at $OPEN_RATE req/s (half the full pipeline's saturation): added latency"
    echo
    echo "| path | p50 | p99 | p99 added vs direct | errors | achieved req/s (median) |"
    echo "|---|---:|---:|---:|---:|---:|"
    d99=$(median open direct 6)
    for target in direct open full nginx; do
        case $target in
            direct) label="direct to upstream" ;;
            open) label="modelgate, routing only" ;;
            full) label="modelgate, API key + rate limit + v2 validation" ;;
            nginx) label="nginx proxy_pass" ;;
        esac
        p99=$(median open "$target" 6)
        added=$(awk -v a="$p99" -v b="$d99" 'BEGIN { if (a == "NA" || b == "NA") print "—"; else printf "%+d µs\n", a - b }')
        printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$(fmt_lat "$(median open "$target" 5)")" \
            "$(fmt_lat "$p99")" "$added" "$(total open "$target" 7)" "$(fmt_rps "$(median open "$target" 4)")"
    done
    echo
    echo "Medians over $ROUNDS interleaved rounds of ${DURATION}s. Latencies are medians of the per-round"
    echo "p50/p99. \"errors\" = non-2xx responses + socket/timeout/protocol errors, summed over all rounds."
    echo "Ratios compare medians measured with the same load generator in this run. \"proxy CPU µs /"
    echo "request\" = user + system CPU time the proxy process (nginx: master and worker) used during"
    echo "the round, divided by the requests completed: it moves less than req/s when other work"
    echo "on the machine takes CPU time from the proxy (time the proxy does not get is not counted)."
)

mkdir -p "$(dirname "$OUT")"
{
    echo "## modelgate baseline benchmark"
    echo
    printf '%s\n' "${header[@]}"
    echo "- command: \`DURATION=$DURATION ROUNDS=$ROUNDS scripts/bench-baseline.sh\`"
    echo
    echo "$table"
    echo
    echo "<details><summary>raw results (tool, target, round, req/s, p50 µs, p99 µs, errors, proxy CPU µs / request)</summary>"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
    echo
    echo "</details>"
} >"$OUT"

echo
echo "$table"
echo
echo "bench-baseline: report written to $OUT" >&2
