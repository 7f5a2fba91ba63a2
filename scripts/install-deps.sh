#!/usr/bin/env bash
# Install the system packages needed to build modelgate and, with --bench, to run
# scripts/bench-baseline.sh. Debian/Ubuntu (apt) only; idempotent and non-interactive:
# packages already installed are left alone and `apt-get update` runs only when
# something is missing.
#
#   scripts/install-deps.sh           # build deps: cmake (Pingora builds zlib-ng), pkg-config, curl
#   scripts/install-deps.sh --bench   # + nginx-light, wrk, util-linux (taskset), openssl, valgrind,
#                                     #   linux-perf, python3
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

bench=0
for arg in "$@"; do
    case "$arg" in
        --bench) bench=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install-deps.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

packages=(cmake pkg-config curl)
if [[ $bench == 1 ]]; then
    packages+=(nginx-light wrk util-linux openssl valgrind linux-perf python3)
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps.sh: apt-get/dpkg not found; install these by hand: ${packages[*]}" >&2
    exit 1
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} == 0 ]]; then
    echo "install-deps.sh: already installed: ${packages[*]}"
    exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "install-deps.sh: not root and no sudo; run as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps.sh: installing: ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"

# Debian starts the packaged nginx service on install; the benchmark runs its own
# nginx and only needs the binary. Leave the service as the system has it, but say so.
if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    echo "install-deps.sh: note: the nginx package may have enabled a system nginx on :80;" \
        "the benchmark does not use it (systemctl disable --now nginx to stop it)."
fi
echo "install-deps.sh: done"
