#!/bin/sh
# run_fuzz.sh TARGET SEED_DIR SECONDS - run a libFuzzer target for a
# bounded time from the checked-in seeds.  New inputs go to a scratch
# corpus (never into the source tree); a crash leaves its input in the
# scratch dir, whose path is printed, and fails the test.
set -eu
target=$1 seeds=$2 secs=${KC_FUZZ_SECONDS:-$3}
work=$(mktemp -d /tmp/kcfuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
echo "fuzzing $(basename "$target") for ${secs}s from $seeds"
if "$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/" -print_final_stats=1 \
    "$work/corpus" "$seeds" >"$work/log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|Done [0-9]+ runs' "$work/log" || true
    exit 0
fi
cat "$work/log" | tail -60
trap - EXIT
echo "crash input kept in $work"
exit 1
