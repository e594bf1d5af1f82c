#!/usr/bin/env bash
# tests/run.sh - run every keycache test.
#
# On a fresh Debian 12 machine, as root or with sudo: installs the packages
# the build and the tests need (only those missing), then
#   1. builds build-test/ (default compiler, gcc) with AddressSanitizer +
#      UndefinedBehaviorSanitizer and runs `meson test` there: the unit,
#      integration and demo tests;
#   2. builds build-fuzz/ with clang (same sanitizers) and runs the
#      `fuzz` suite there: the libFuzzer targets, each for a bounded time
#      (KC_FUZZ_SECONDS, default 30);
#   3. builds build-valgrind/ without sanitizers and runs the `valgrind`
#      suite: integration tests with every agent under memcheck.
# Node packages for the tests (official SDK interop, the Alibaba KMS
# fake's signature checker) are installed from their lock files first.
# Prints meson's summary for each, then one closing line
# "N passed, N failed, N skipped" over both.  Exits non-zero on any
# failure.  Idempotent: a second run reuses both build directories.
#
# Environment:
#   KC_TEST_BUILDDIR      main build directory (default: build-test)
#   KC_FUZZ_BUILDDIR      clang build directory (default: build-fuzz)
#   KC_TEST_FUZZ          0 skips the clang/fuzz phase (default: 1)
#   KC_TEST_VALGRIND      0 skips the valgrind phase (default: 1)
#   KC_TEST_TIMEOUT_MULT  meson --timeout-multiplier (default: 3)
#   KC_TEST_ARGS          extra arguments for the main `meson test`
#                         (e.g. '--suite integration')
set -euo pipefail

cd "$(dirname "$0")/.."
BUILDDIR=${KC_TEST_BUILDDIR:-build-test}
FUZZDIR=${KC_FUZZ_BUILDDIR:-build-fuzz}
RUN_FUZZ=${KC_TEST_FUZZ:-1}
TIMEOUT_MULT=${KC_TEST_TIMEOUT_MULT:-3}
SANITIZE_OPTS=(-Db_sanitize=address,undefined -Db_lundef=false)

APT_PACKAGES=(
    meson ninja-build pkg-config gcc clang libclang-rt-14-dev
    libevent-dev libssl-dev libcurl4-openssl-dev libmsgpack-dev
    libsodium-dev libinih-dev libjansson-dev libcmocka-dev
    libsqlite3-dev libsystemd-dev libpq-dev postgresql
    python3-msgpack python3-botocore python3-prometheus-client
    python3-yaml python3-cryptography openssl ca-certificates
    valgrind systemd
)

TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
STATUS=0

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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}" </dev/null
}

# uses_compiler DIR CC: true when DIR's C compile rule runs CC.
uses_compiler()
{
    grep -A1 '^rule c_COMPILER$' "$1/build.ninja" 2>/dev/null |
        grep -q "command = $2 "
}

# configure_build DIR [CC [MESON_ARG...]]: set up DIR (or reuse it) with
# the sanitizers and any extra meson arguments, then compile.  CC only
# matters when DIR is set up afresh.
configure_build()
{
    local dir=$1 compiler=${2:-}
    local env_cc=()
    local opts=("${SANITIZE_OPTS[@]}" "${@:3}")

    if [ -n "$compiler" ]; then
        env_cc=(env "CC=$compiler")
        if [ -f "$dir/meson-private/coredata.dat" ] &&
            ! uses_compiler "$dir" "$compiler"; then
            log "build: $dir was set up with another compiler; redoing"
            env "CC=$compiler" meson setup --wipe "$dir" \
                "${opts[@]}" || return 1
        fi
    fi
    if [ -f "$dir/meson-private/coredata.dat" ]; then
        log "build: reusing $dir"
        if ! meson configure "$dir" "${opts[@]}" >/dev/null; then
            log "build: $dir does not reconfigure; setting it up again"
            "${env_cc[@]}" meson setup --wipe "$dir" "${opts[@]}" ||
                return 1
        fi
    else
        if [ -e "$dir" ]; then
            log "build: $dir is not a meson build directory; replacing"
            rm -rf -- "$dir"
        fi
        log "build: setting up $dir ${compiler:+(CC=$compiler)}"
        "${env_cc[@]}" meson setup "$dir" "${opts[@]}" || return 1
    fi
    log "build: compiling $dir"
    ninja -C "$dir"
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

# run_meson_test DIR ARGS...: run meson test, add its counts to the totals.
run_meson_test()
{
    local dir=$1 rc=0 passed failed skipped
    shift

    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --print-errorlogs --num-processes 2 \
        --timeout-multiplier "$TIMEOUT_MULT" "$@" </dev/null || rc=$?

    read -r passed failed skipped <<<"$(count_results \
        "$dir/meson-logs/testlog.json")"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        # meson itself failed (e.g. a test could not be built).
        failed=1
    fi
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        STATUS=1
    fi
}

# A failed build counts as one failed test, so the closing line and the
# exit status both show it.
build_failed()
{
    printf '\nbuild of %s failed: its tests did not run\n' "$1"
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    STATUS=1
}

# npm_install DIR: npm ci from DIR's lock file unless a completed install
# (its stamp file newer than the lock file) is already there.
npm_install()
{
    local dir=$1 stamp=$1/node_modules/.kc-installed

    if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
        log "npm: $dir up to date"
        return 0
    fi
    log "npm: installing $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts) &&
        touch "$stamp"
}

VG_BUILDDIR=${KC_TEST_VG_BUILDDIR:-build-valgrind}

# Phase 3: agents under valgrind need a build without sanitizers.
run_valgrind()
{
    if ! command -v valgrind >/dev/null 2>&1; then
        log "valgrind: not installed; skipping"
        return 0
    fi
    if [ -f "$VG_BUILDDIR/meson-private/coredata.dat" ]; then
        meson configure "$VG_BUILDDIR" -Db_sanitize=none >/dev/null ||
            return 1
    else
        meson setup "$VG_BUILDDIR" -Db_sanitize=none || return 1
    fi
    ninja -C "$VG_BUILDDIR" || return 1
    run_meson_test "$VG_BUILDDIR" --suite valgrind
}

main()
{
    install_packages
    tests/interop/install.sh || build_failed "tests/interop (npm ci)"
    npm_install tests/fakes || build_failed "tests/fakes (npm ci)"

    # Sanitizer behaviour for every test and every process a test starts
    # (the agent under test inherits it).  abort_on_error makes a report
    # fail the test even when a program would otherwise exit 0.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}
    # Tests must not pick up a socket of an agent running on this machine.
    unset KEYCACHE_SOCKET

    log "phase 1: $BUILDDIR (ASan+UBSan): unit, integration, demo"
    if configure_build "$BUILDDIR"; then
        # shellcheck disable=SC2086
        run_meson_test "$BUILDDIR" ${KC_TEST_ARGS:-}
    else
        build_failed "$BUILDDIR"
    fi

    if [ "$RUN_FUZZ" != 0 ]; then
        log "phase 2: $FUZZDIR (clang, ASan+UBSan): fuzz suite"
        # Every file built with coverage for libFuzzer, not just the
        # targets: without it the fuzzers get no feedback from the code
        # they test and mutate blindly.
        if configure_build "$FUZZDIR" clang \
            -Dc_args=-fsanitize=fuzzer-no-link; then
            run_meson_test "$FUZZDIR" --suite fuzz
        else
            build_failed "$FUZZDIR"
        fi
    fi

    if [ "${KC_TEST_VALGRIND:-1}" != 0 ]; then
        log "phase 3: $VG_BUILDDIR (no sanitizers): agents under valgrind"
        run_valgrind || build_failed "$VG_BUILDDIR"
    fi

    echo
    echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
    if [ "$STATUS" -ne 0 ]; then
        exit 1
    fi
    if [ "$TOTAL_PASSED" -eq 0 ]; then
        die "no test ran"
    fi
}

main "$@"
