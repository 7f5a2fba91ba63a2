#!/usr/bin/env bash
# Paired A/B of two proxy paths on the same core, for differences smaller than this shared
# machine's drift between runs: ROUNDS rounds, each measuring both paths back to back
# (`wrk -t1 -c64 GET` unless POST or RATE say otherwise; order A B, then B A, alternating,
# so a trend in the machine's load hits both alike), and the median over rounds of B's
# req/s divided by A's.
#
#   routing  modelgate, public path-prefix route (/open), no checks
#   auth     modelgate, API key route (/auth, an unlimited plan: no limiter)
#   keyed    modelgate, the public route with auth's x-api-key header (stripped, not checked)
#   jwt      modelgate, JWT route (/jwt, HS256, from the verified-token cache after the first)
#   full     modelgate, the full pipeline: API key + rate limit + v2 validation (model `full`;
#            POST=1 only)
#   guarded  the full pipeline plus extraction detection (model `guarded`; POST=1 only): the
#            upstream then answers every path with a v2 infer answer (V2_ANSWER in
#            bench-lib.sh), which the gateway's guard reads and hardens
#   embedded the guarded pipeline in front of the embedded digits model instead of the
#            upstream (model `served`; POST=1 only): the same checks, no upstream hop
#   steal    a second modelgate, same config but `work_stealing = true`, /open
#   other    a second modelgate from OTHER_BIN (another build, e.g. the previous commit's
#            release binary), same config, /open (OTHER_ROUTE=full, guarded or embedded: that path)
#   nginx    nginx proxy_pass (bench/nginx.conf.template)
#   direct   no proxy: the load generator straight to the upstream (the reference for added
#            latency; its "proxy CPU" column is the upstream's, on LOAD_CPU)
#
#   A=routing B=auth ROUNDS=14 DURATION=10 scripts/bench-ab.sh
#
# Pinning as in bench-baseline.sh: every proxy on PROXY_CPU (0), wrk and the upstream on
# LOAD_CPU (1); the gateway config is bench-lib.sh's `write_bench_config`. Each proxy
# process is idle while the other path is measured. Also reported: proxy CPU µs per request
# (user + system from /proc). Report written to OUT (default target/bench-ab-A-B[-post][-rateN].md).
#
# RATE=N instead measures latency open loop: `modelgate-loadtest run --rate N` (latency
# from intended send times), p50 and p99 per path and round, and the rate each answered at.
# UPSTREAM_RT=1 runs the upstream at real-time priority (bench-lib.sh `start_upstream`): on
# the CPU it shares with the load generator it otherwise waits for a scheduler time slice
# now and then, which puts milliseconds into every path's p99 but direct's. POST=1 sends the
# held-out v2 infer bodies (1 × 64 features; the upstream answers any path) with
# modelgate-loadtest. WARMUP=2: seconds of unrecorded closed-loop load on each path first.
#
# Needs: cargo, wrk, taskset, curl, openssl; nginx for the nginx path (scripts/install-deps.sh --bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=bench-ab
HOST=127.0.0.1
# shellcheck source=bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

A=${A:-routing} B=${B:-auth}
ROUNDS=${ROUNDS:-14} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-0} POST=${POST:-0}
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1} BASE_PORT=${BASE_PORT:-19300}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for path in "$A" "$B"; do
    [[ $path =~ ^(routing|auth|keyed|jwt|full|guarded|embedded|steal|other|nginx|direct)$ ]] ||
        die "A and B must be routing, auth, keyed, jwt, full, guarded, embedded, steal, other, nginx or direct (got '$path')"
done
[[ $A != "$B" ]] || die "A and B must differ"
UPSTREAM_RT=${UPSTREAM_RT:-0}
for knob in ROUNDS DURATION WARMUP CONNECTIONS RATE POST UPSTREAM_RT PROXY_CPU LOAD_CPU BASE_PORT; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer"
done
suffix=""
((POST)) && suffix+=-post
((RATE > 0)) && suffix+=-rate$RATE
OUT=${OUT:-target/bench-ab-$A-$B$suffix.md}
for tool in cargo curl taskset wrk openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "missing: $tool (scripts/install-deps.sh --bench)"
done
# A path in use, or the path `other` serves (its upstream and config needs are that path's).
uses() {
    [[ $A == "$1" || $B == "$1" ]] ||
        [[ ($A == other || $B == other) && ${OTHER_ROUTE:-routing} == "$1" ]]
}

UPSTREAM_PORT=$((BASE_PORT + 1)) GATEWAY_PORT=$((BASE_PORT + 80)) ADMIN_PORT=$((BASE_PORT + 90))
STEAL_PORT=$((BASE_PORT + 81)) STEAL_ADMIN_PORT=$((BASE_PORT + 91)) NGINX_PORT=$((BASE_PORT + 82))
OTHER_PORT=$((BASE_PORT + 83)) OTHER_ADMIN_PORT=$((BASE_PORT + 93))
if { uses full || uses guarded || uses embedded; } && ((!POST)); then
    die "the full, guarded and embedded paths validate v2 bodies: they need POST=1"
fi
if uses other; then
    [[ -x ${OTHER_BIN:-} ]] || die "the other path needs OTHER_BIN, an executable modelgate"
fi
build_release
bench_start
check_ports_free "$UPSTREAM_PORT" "$GATEWAY_PORT" "$ADMIN_PORT" "$STEAL_PORT" "$STEAL_ADMIN_PORT" "$NGINX_PORT" \
    "$OTHER_PORT" "$OTHER_ADMIN_PORT"
start_upstream "$LOAD_CPU" "$UPSTREAM_PORT" "$(uses guarded && echo "$V2_ANSWER")"
UPSTREAM_PID=${PIDS[-1]}
write_bench_config "$GATEWAY_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT"
AUTH_KEY=$("$MODELGATE" keys issue --config "$WORK/modelgate.toml" --consumer internal --plan internal --models auth 2>/dev/null) ||
    die "cannot issue the API key"
FULL_KEY=$("$MODELGATE" keys issue --config "$WORK/modelgate.toml" --consumer bench --plan bench --models full,guarded,served 2>/dev/null) ||
    die "cannot issue the API key"

declare -A PID URL HEADER
TAIL=$( ((POST)) && echo /v2/models/full/infer || echo /x)
start_gateway "$WORK/modelgate.toml" "$ADMIN_PORT" modelgate
PID[routing]=$GATEWAY_PID URL[routing]=http://$HOST:$GATEWAY_PORT/open$TAIL HEADER[routing]="x-bench: 1"
PID[auth]=$GATEWAY_PID URL[auth]=http://$HOST:$GATEWAY_PORT/auth$TAIL HEADER[auth]="x-api-key: $AUTH_KEY"
PID[keyed]=$GATEWAY_PID URL[keyed]=${URL[routing]} HEADER[keyed]=${HEADER[auth]}
PID[jwt]=$GATEWAY_PID URL[jwt]=http://$HOST:$GATEWAY_PORT/jwt$TAIL HEADER[jwt]="authorization: Bearer $(bench_jwt)"
PID[full]=$GATEWAY_PID URL[full]=http://$HOST:$GATEWAY_PORT/v2/models/full/infer HEADER[full]="x-api-key: $FULL_KEY"
PID[guarded]=$GATEWAY_PID URL[guarded]=http://$HOST:$GATEWAY_PORT/v2/models/guarded/infer HEADER[guarded]=${HEADER[full]}
PID[embedded]=$GATEWAY_PID URL[embedded]=http://$HOST:$GATEWAY_PORT/v2/models/served/infer HEADER[embedded]=${HEADER[full]}
PID[direct]=$UPSTREAM_PID URL[direct]=http://$HOST:$UPSTREAM_PORT/open$TAIL HEADER[direct]="x-bench: 1"
second_gateway() { # name port admin-port [sed-expression]: the gateway's config on other ports
    sed -e "s|$HOST:$GATEWAY_PORT\"|$HOST:$2\"|" -e "s|$HOST:$ADMIN_PORT\"|$HOST:$3\"|" \
        -e "s|modelgate\.pid|$1.pid|; s|modelgate_upgrade\.sock|$1_upgrade.sock|" \
        -e "${4:-}" "$WORK/modelgate.toml" >"$WORK/$1.toml"
    start_gateway "$WORK/$1.toml" "$3" "$1"
    PID[$1]=$GATEWAY_PID URL[$1]=http://$HOST:$2/open$TAIL HEADER[$1]="x-bench: 1"
}
if uses steal; then
    second_gateway steal "$STEAL_PORT" "$STEAL_ADMIN_PORT" "0,/^threads = 1$/s//threads = 1\nwork_stealing = true/"
    grep -q '^work_stealing = true$' "$WORK/steal.toml" || die "cannot write the work-stealing config"
fi
if uses other; then
    GATEWAY_BIN=$OTHER_BIN second_gateway other "$OTHER_PORT" "$OTHER_ADMIN_PORT"
    case ${OTHER_ROUTE:-routing} in
        routing) ;;
        full | guarded | embedded)
            URL[other]=${URL[$OTHER_ROUTE]/:$GATEWAY_PORT\//:$OTHER_PORT/}
            HEADER[other]=${HEADER[$OTHER_ROUTE]}
            ;;
        *) die "OTHER_ROUTE must be routing, full, guarded or embedded" ;;
    esac
fi
if uses nginx; then
    command -v nginx >/dev/null 2>&1 || die "missing: nginx (scripts/install-deps.sh --bench)"
    write_nginx_config "$NGINX_PORT" "$UPSTREAM_PORT"
    taskset -c "$PROXY_CPU" nginx "${NGINX_ARGS[@]}" -g "master_process off;" >"$WORK/nginx.log" 2>&1 &
    PID[nginx]=$! URL[nginx]=http://$HOST:$NGINX_PORT/open$TAIL HEADER[nginx]="x-bench: 1"
    PIDS+=("${PID[nginx]}") SIGS+=(TERM) NAMES+=(nginx)
fi
for path in routing steal other nginx; do # (auth, jwt, full: the routing gateway, behind credentials)
    [[ -n ${URL[$path]:-} && ${URL[$path]} == */open* ]] && wait_http "${URL[$path]}" 200 "$path -> upstream"
done

measure() { # path seconds -> "req/s cpu-µs-per-request", or with RATE "p50-µs p99-µs achieved-req/s"
    local path=$1 out cpu0 cpu1 n lat args=()
    check_alive "before $path"
    cpu0=$(cpu_us "${PID[$path]}")
    if ((POST || RATE > 0)); then
        ((RATE > 0)) && args+=(--rate "$RATE")
        ((POST)) && args+=(--samples "$ROOT/models/digits_holdout.json" --batch 1)
        out=$(taskset -c "$LOAD_CPU" "$LOADTEST" run --url "${URL[$path]}" --connections "$CONNECTIONS" \
            --duration "${2}s" --header "${HEADER[$path]}" "${args[@]}" --json 2>/dev/null | grep '^{' | tail -1) ||
            die "modelgate-loadtest against $path failed"
        cpu1=$(cpu_us "${PID[$path]}")
        n=$(json_num "$out" completed)
        [[ $n == "$(json_num "$(grep -o '"statuses":{[^}]*}' <<<"$out")" 200)" ]] || die "$path answered non-200: $out"
        lat=$(grep -o '"latency_us":{[^}]*}' <<<"$out")
        if ((RATE > 0)); then
            echo "$(json_num "$lat" p50) $(json_num "$lat" p99) $(fmt_int "$(json_num "$out" rps)")"
        else
            echo "$(fmt_int "$(json_num "$out" rps)") $(cpu_per_request "$cpu0" "$cpu1" "$n")"
        fi
        return
    fi
    out=$(taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNECTIONS" "-d${2}s" -H "${HEADER[$path]}" "${URL[$path]}") ||
        die "wrk against $path failed"
    cpu1=$(cpu_us "${PID[$path]}")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    grep -q 'Non-2xx' <<<"$out" && die "$path answered non-2xx: $out"
    echo "$(awk -v n="$n" -v s="$2" 'BEGIN {printf "%.0f", n / s}') $(cpu_per_request "$cpu0" "$cpu1" "$n")"
}
sd=$( ((RATE > 0)) && echo 0 || echo 1) # decimals of the second figure
load=$( ((POST)) && echo "POST v2 infer (1 × 64 features)" || echo "GET")
if ((RATE > 0)); then
    first="p50 µs" second="p99 µs" mode="$load, open loop at $RATE req/s (modelgate-loadtest, $CONNECTIONS connections)"
elif ((POST)); then
    first="req/s" second="proxy CPU µs/req" mode="$load, closed loop (modelgate-loadtest, $CONNECTIONS connections)"
else
    first="req/s" second="proxy CPU µs/req" mode="$load, closed loop (wrk -t1 -c$CONNECTIONS)"
fi
RATE=0 measure "$A" "$WARMUP" >/dev/null # closed-loop warm-up, unrecorded
RATE=0 measure "$B" "$WARMUP" >/dev/null
echo "$BENCH_NAME: $ROUNDS rounds x 2 x ${DURATION}s: A=$A B=$B" >&2
rows=()
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then
        a=$(measure "$A" "$DURATION")
        b=$(measure "$B" "$DURATION")
    else
        b=$(measure "$B" "$DURATION")
        a=$(measure "$A" "$DURATION")
    fi
    read -r ra ca na <<<"$a"
    read -r rb cb nb <<<"$b"
    rows+=("$r $ra $rb $ca $cb $na $nb")
    echo "  round $r: $A $ra / $ca, $B $rb / $cb ($first / $second)" >&2
done

median() { # printf-format
    sort -g | awk -v f="$1" '{v[NR] = $1} END {printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
col() { printf '%s\n' "${rows[@]}" | awk "{print $1}" | median "%.${2:-0}f"; } # awk-expression [decimals]
report=$(
    echo "## Paired A/B: $A vs $B"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- command: \`A=$A B=$B ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP$( ((RATE > 0)) && echo " RATE=$RATE")$( ((POST)) && echo " POST=1")$( ((UPSTREAM_RT)) && echo " UPSTREAM_RT=1") scripts/bench-ab.sh\`"
    echo "- load: $mode; proxy on CPU $PROXY_CPU, load generator and upstream on CPU $LOAD_CPU$( ((UPSTREAM_RT)) && echo " (upstream SCHED_FIFO)"); $(nproc) CPUs, $(uname -r)"
    echo
    # Open loop: also the rate each path answered at (below the offered rate when it
    # could not keep up).
    extra="" rule=""
    ((RATE > 0)) && extra=" $A answered req/s | $B answered req/s |" rule="---:|---:|"
    echo "| round | $A $first | $B $first | $B / $A | $A $second | $B $second |$extra"
    echo "|---:|---:|---:|---:|---:|---:|$rule"
    for row in "${rows[@]}"; do
        read -r r ra rb ca cb na nb <<<"$row"
        echo "| $r | $ra | $rb | $(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", b / a}') | $ca | $cb |$( ((RATE > 0)) && echo " $na | $nb |")"
    done
    echo
    echo "Medians over the rounds: $first $A $(col '$2'), $B $(col '$3'), **$B / $A = $(col '$3 / $2' 3)** (per-round ratio);" \
        "$second $A $(col '$4' "$sd"), $B $(col '$5' "$sd") ($B / $A = $(col '$5 / $4' 3))."
)
mkdir -p "$(dirname "$OUT")"
echo "$report" >"$OUT"
echo "$report"
echo "$BENCH_NAME: report written to $OUT" >&2
