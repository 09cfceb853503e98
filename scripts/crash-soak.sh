#!/usr/bin/env bash
# Runs the SIGKILL-during-puts test with many more kill cycles than `make test` (50), and both power-cut
# tests (the store's and the daemon's) with 500 cuts each instead of 30.
# Usage: scripts/crash-soak.sh [cycles] [store cuts] [daemon cuts]   (default 1000, 500 and 500; about
# 0.3 s a cycle, 1.5 s a store cut, 2.5 s a daemon cut)
set -euo pipefail
cd "$(dirname "$0")/.."
export CASEVAULT_CRASH_CYCLES="${1:-1000}"
export CASEVAULT_POWERCUT_CYCLES="${2:-500}"
export CASEVAULT_DAEMON_POWERCUT_CYCLES="${3:-500}"
swift build --build-tests
swift test --filter 'CrashTests|PutRecoveryTests|ShredTests|PowerCutTests'
