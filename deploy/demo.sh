#!/usr/bin/env bash
# demo.sh - keycache's main job, end to end, on a fresh Debian 12.
#
# Installs missing build packages (needs root or sudo only then), builds
# into build-demo/, creates a master key and an agent config in a
# temporary directory, starts keycache-agent with the local provider,
# runs the encrypted-column demo (users_demo: SQLite users table, email
# column encrypted through the agent), prints the agent's stats, stops
# the agent with SIGTERM and removes the temporary directory.
#
# Idempotent: a second run reuses the build and starts from a fresh
# temporary directory.  Exits non-zero on any failure.
#
#   ./deploy/demo.sh [--count N] [--build-dir DIR] [--no-build]
#
# --no-build skips package installation and building and uses the
# binaries already in the build directory (meson test runs it so).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build="$top/build-demo"
count=300
alias_name=users-email
max_messages=100

packages=(meson ninja-build pkg-config gcc libevent-dev libssl-dev
          libcurl4-openssl-dev libmsgpack-dev libsodium-dev libinih-dev
          libjansson-dev libcmocka-dev libsqlite3-dev)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

no_build=0
while [ $# -gt 0 ]; do
    case "$1" in
    --count) [ $# -ge 2 ] || die "--count wants a number"; count=$2; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir wants a path"; build=$2; shift 2 ;;
    --no-build) no_build=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
case "$count" in ''|*[!0-9]*) die "--count wants a number" ;; esac

install_missing() {
    local missing=() p sudo=()

    for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
                grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "all build packages are installed"
        return
    fi
    command -v apt-get >/dev/null || die "missing packages and no apt-get: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null ||
            die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

build_tree() {
    if [ -d "$build" ] && [ ! -f "$build/build.ninja" ]; then
        # A setup that died half-way: start that directory over.
        rm -rf "$build"
    fi
    if [ ! -d "$build" ]; then
        meson setup "$build" "$top" --buildtype=debugoptimized
    else
        echo "reusing $build"
    fi
    ninja -C "$build" agent/keycache-agent client/keycachectl deploy/users_demo
}

if [ "$no_build" -eq 0 ]; then
    log "checking build packages"
    install_missing
    log "building into $build"
    build_tree
fi
agent="$build/agent/keycache-agent"
ctl="$build/client/keycachectl"
demo="$build/deploy/users_demo"
for exe in "$agent" "$ctl" "$demo"; do
    [ -x "$exe" ] || die "$exe is missing (build first, or drop --no-build)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keycache-demo.XXXXXX")
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sock="$tmp/agent.sock"
key="$tmp/$alias_name.key"
conf="$tmp/agent.ini"
agent_log="$tmp/agent.log"

log "creating a master key and an agent config in $tmp"
"$ctl" keygen "$key"
cat > "$conf" <<EOF
[agent]
socket = $sock
log_level = info

[key.$alias_name]
provider = local
key_file = $key
ttl = 300
max_messages = $max_messages
max_bytes = 1048576
EOF
cat "$conf"

log "starting keycache-agent"
"$agent" --config "$conf" 2>"$agent_log" &
agent_pid=$!
ready=0
for _ in $(seq 1 100); do
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        cat "$agent_log" >&2
        die "keycache-agent exited during start-up"
    fi
    if "$ctl" --socket "$sock" --timeout 1000 ping >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    cat "$agent_log" >&2
    die "keycache-agent did not answer on $sock within 10 s"
fi
"$ctl" --socket "$sock" health

log "running the demo: $count users, email column encrypted"
"$demo" --socket "$sock" --key "$alias_name" --count "$count" "$tmp/users.db"

log "agent stats"
"$ctl" --socket "$sock" stats
stats=$("$ctl" --socket "$sock" stats --json)
# The stats are one line of compact JSON; pick two counters out of it.
row=$(printf '%s' "$stats" | sed -n "s/.*\"$alias_name\":{\([^}]*\)}.*/\1/p")
enc=$(printf '%s' "$row" | grep -o '"encrypt":[0-9]*' | cut -d: -f2 || true)
calls=$(printf '%s' "$row" | grep -o '"provider_calls":[0-9]*' | cut -d: -f2 || true)
if [ -z "$enc" ] || [ -z "$calls" ]; then
    die "stats lack encrypt/provider_calls for $alias_name"
fi
printf '\n%s encrypts used %s provider calls (data keys generated or unwrapped;\nmax_messages = %s, so each data key served up to %s messages).\n' \
    "$enc" "$calls" "$max_messages" "$max_messages"
if [ "$enc" -lt "$count" ]; then
    die "the agent counted $enc encrypts, expected at least $count"
fi
if [ "$calls" -ge "$enc" ]; then
    die "no caching: $calls provider calls for $enc encrypts"
fi

log "stopping keycache-agent (SIGTERM)"
kill -TERM "$agent_pid"
for _ in $(seq 1 100); do
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$agent_pid" 2>/dev/null; then
    kill -KILL "$agent_pid" 2>/dev/null || true
    cat "$agent_log" >&2
    die "keycache-agent did not stop within 10 s of SIGTERM"
fi
status=0
wait "$agent_pid" || status=$?
agent_pid=""
echo "--- agent log ---"
cat "$agent_log"
echo "--- end of agent log ---"
[ "$status" -eq 0 ] || die "keycache-agent exited with status $status"
[ ! -e "$sock" ] || die "keycache-agent left its socket behind"

log "done: demo passed, agent stopped cleanly"
