#!/usr/bin/env bash
# Runs the SIGKILL-during-puts test with many more kill cycles than `make test` (50).
# Usage: scripts/crash-soak.sh [cycles]   (default 1000; about 0.3 s a cycle)
set -euo pipefail
cd "$(dirname "$0")/.."
export CASEVAULT_CRASH_CYCLES="${1:-1000}"
swift build --build-tests
swift test --filter 'CrashTests|PutRecoveryTests|ShredTests'
