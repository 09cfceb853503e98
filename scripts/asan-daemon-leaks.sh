#!/usr/bin/env bash
# The daemon's own leaks under LeakSanitizer (make test-asan runs the tests with leak checks off: a
# process that exits on an error path, or is killed, leaves memory behind by design). Starts the ASan
# build of casevaultd on the embedded default in a throw-away directory, asks it for health, whoami and
# status, stops it with SIGTERM, and fails unless it exits 0 with no leak report.
# Usage: scripts/asan-daemon-leaks.sh [bin-dir]   (default .build-asan/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-.build-asan/debug}"
config="$PWD/Config/casevault.toml"
export LSAN_OPTIONS="suppressions=$PWD/Tests/support/lsan.supp"
export ASAN_OPTIONS="detect_leaks=1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$OLDPWD/$bin/casevaultd" --config "$config" >daemon.out 2>daemon.err &
pid=$!
for _ in $(seq 1 100); do [ -S .casevault/run/casevault.sock ] && break; sleep 0.1; done
for path in health whoami admin/status; do
    curl -sf --unix-socket .casevault/run/casevault.sock "http://casevault/v1/$path" >/dev/null
done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" -ne 0 ] || grep -q "LeakSanitizer" daemon.err; then
    echo "asan-daemon-leaks: casevaultd exited $status" >&2
    grep -A20 "LeakSanitizer" daemon.err >&2 || true
    exit 1
fi
echo "asan-daemon-leaks: casevaultd started, answered and stopped with no leak"
