#!/usr/bin/env bash
# tests/run.sh - run every keycache test.
#
# On a fresh Debian 12 machine, as root or with sudo: installs the packages
# the build and the tests need (only those missing), builds into
# build-test/ with AddressSanitizer + UndefinedBehaviorSanitizer, runs
# `meson test`, prints meson's summary and a closing
# "N passed, N failed, N skipped" line.  Exits non-zero on any failure.
# Idempotent: a second run reuses build-test/.
#
# Environment:
#   KC_TEST_BUILDDIR      build directory (default: build-test)
#   KC_TEST_TIMEOUT_MULT  meson --timeout-multiplier (default: 3)
#   KC_TEST_ARGS          extra arguments for `meson test` (e.g. a suite)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILDDIR=${KC_TEST_BUILDDIR:-build-test}
TIMEOUT_MULT=${KC_TEST_TIMEOUT_MULT:-3}

APT_PACKAGES=(
    meson ninja-build pkg-config gcc clang libclang-rt-14-dev
    libevent-dev libssl-dev libcurl4-openssl-dev libmsgpack-dev
    libsodium-dev libinih-dev libjansson-dev libcmocka-dev
    libsqlite3-dev python3-msgpack python3-botocore
)

log()
{
    printf '==> %s\n' "$*"
}

die()
{
    printf 'tests/run.sh: %s\n' "$*" >&2
    exit 1
}

# Run a command as root: directly when we are root, else through sudo.
as_root()
{
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

is_installed()
{
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null |
        grep -q '^install ok installed$'
}

install_packages()
{
    local missing=() p

    for p in "${APT_PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    # Node may come from another install (not Debian's package): only
    # ask apt for it when there is no node at all.
    if ! command -v node >/dev/null 2>&1; then
        missing+=(nodejs npm)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        log "packages: all present"
        return 0
    fi

    log "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}" </dev/null
}

configure_build()
{
    local opts=(-Db_sanitize=address,undefined -Db_lundef=false)

    if [ -f "$BUILDDIR/meson-private/coredata.dat" ]; then
        log "build: reusing $BUILDDIR"
        if ! meson configure "$BUILDDIR" "${opts[@]}" >/dev/null; then
            log "build: $BUILDDIR does not reconfigure; setting it up again"
            meson setup --wipe "$BUILDDIR" "${opts[@]}"
        fi
    else
        if [ -e "$BUILDDIR" ]; then
            log "build: $BUILDDIR is not a meson build directory; replacing"
            rm -rf -- "$BUILDDIR"
        fi
        log "build: setting up $BUILDDIR"
        meson setup "$BUILDDIR" "${opts[@]}"
    fi
    log "build: compiling"
    ninja -C "$BUILDDIR"
}

# Count results in meson's JSON-lines test log; prints "P F S".
count_results()
{
    /usr/bin/python3 - "$1" <<'PY'
import json, sys
passed = failed = skipped = 0
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line).get("result", "")
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:
                failed += 1
except FileNotFoundError:
    pass
print(passed, failed, skipped)
PY
}

main()
{
    local rc=0 counts passed failed skipped

    install_packages
    configure_build

    # Sanitizer behaviour for every test and every process a test starts
    # (the agent under test inherits it).  abort_on_error makes a report
    # fail the test even when a program would otherwise exit 0.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}
    export LSAN_OPTIONS=${LSAN_OPTIONS:-print_suppressions=0}
    # Tests must not pick up a socket of an agent running on this machine.
    unset KEYCACHE_SOCKET

    rm -f "$BUILDDIR/meson-logs/testlog.json"
    log "test: meson test"
    # shellcheck disable=SC2086
    meson test -C "$BUILDDIR" --print-errorlogs --num-processes 2 \
        --timeout-multiplier "$TIMEOUT_MULT" ${KC_TEST_ARGS:-} </dev/null ||
        rc=$?

    counts=$(count_results "$BUILDDIR/meson-logs/testlog.json")
    read -r passed failed skipped <<<"$counts"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        # meson itself failed (e.g. a test could not be built).
        failed=1
    fi
    echo
    echo "$passed passed, $failed failed, $skipped skipped"
    if [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
    if [ "$failed" -ne 0 ]; then
        exit 1
    fi
    if [ "$passed" -eq 0 ]; then
        die "no test ran"
    fi
}

main "$@"
