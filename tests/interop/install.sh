#!/usr/bin/env bash
# tests/interop/install.sh - install the interop test's node dependencies
# (@aws-crypto/client-node, pinned in package.json, locked in
# package-lock.json) into tests/interop/node_modules (gitignored).
#
# Idempotent: runs `npm ci` only when node_modules is missing or was
# installed from a different package-lock.json (a stamp file records the
# lock's hash once an install has completed, so an interrupted install is
# redone).  Install scripts are not run: the packages are plain
# JavaScript.  Talks only to the npm registry npm is configured for.
#
# Exit status: 0 when node_modules is current; 1 (with a message) when
# node or npm is missing or npm ci fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lock="$here/package-lock.json"
modules="$here/node_modules"
stamp="$modules/.keycache-lock.sha256"

die()
{
    printf 'tests/interop/install.sh: %s\n' "$*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 ||
    die "node is not installed (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    die "npm is not installed (Debian: apt-get install npm)"
[ -f "$lock" ] || die "missing $lock"

want=$(sha256sum "$lock" | cut -d' ' -f1)

current()
{
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -f "$modules/@aws-crypto/client-node/package.json" ]
}

if current; then
    echo "interop: node_modules is current ($(node -p \
        "require('$modules/@aws-crypto/client-node/package.json').version" \
        2>/dev/null || echo '?'))"
    exit 0
fi

# Two builds may run this at once: one installs, the other waits.
exec 9>"${TMPDIR:-/tmp}/keycache-interop-npm.$(id -u).lock"
flock -w 900 9 || die "timed out waiting for another install to finish"
if current; then
    echo "interop: node_modules is current (installed meanwhile)"
    exit 0
fi

echo "interop: installing node dependencies (npm ci) into $modules"
rm -f "$stamp"
(cd "$here" && npm ci --no-audit --no-fund --ignore-scripts \
    --loglevel=warn) || die "npm ci failed in $here"
[ -f "$modules/@aws-crypto/client-node/package.json" ] ||
    die "npm ci finished but @aws-crypto/client-node is not installed"
printf '%s\n' "$want" >"$stamp"
echo "interop: installed @aws-crypto/client-node $(node -p \
    "require('$modules/@aws-crypto/client-node/package.json').version")"
