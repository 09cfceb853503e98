#!/usr/bin/env bash
# Fuzzes every parser of CaseVault that meets bytes from outside (Sources/CaseVaultFuzz: request bodies, key
# slots and sealed records, attachments, backups, the shred ledger's copy, the audit log, recovery shares,
# the configuration, certificates) with libFuzzer and AddressSanitizer, each target for a set time, starting
# from its seed corpus in Tests/fuzz-corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     each target (default: all) for SECONDS (default 60)
#   scripts/fuzz.sh --merge [TARGET...]       folds into Tests/fuzz-corpus the inputs earlier runs found
#                                             that add coverage (libFuzzer -merge=1), for committing
#
# A finding (crash, leak, timeout, out-of-memory) is copied into Tests/fuzz-corpus/<target>/ under
# libFuzzer's name for it (crash-<sha1>, …), so that `make test` replays it from then on; it is printed
# with the end of libFuzzer's report, and the script exits 1 once every target ran. Per target it prints
# the inputs run and the corpus at the end, then the CPU time of the whole run.
#
# Environment: FUZZ_CONFIGURATION (release, the default, or debug), FUZZ_FLAGS (more libFuzzer flags, such
# as -jobs=2 or -dict=…), FUZZ_TMPDIR (where the targets' files go; default /dev/shm, else .build-fuzz),
# ASAN_OPTIONS as usual, SWIFT (the swift driver).
#
# How it is built: `swift build --product casevault-fuzz --sanitize=fuzzer --sanitize=address -Xswiftc
# -sanitize=fuzzer,address -Xswiftc -DCASEVAULT_LIBFUZZER` in its own scratch path (.build-fuzz), so that
# it never disturbs .build (as swift-protobuf's FuzzTesting/do_build.sh does). The -Xswiftc flag is not
# redundant: SwiftPM hands swiftc `-sanitize=fuzzer -sanitize=address` as two flags, and swiftc keeps only
# the last, so the Swift code was built without coverage and libFuzzer fuzzed blind (3.6 million inputs,
# a corpus of 1); the combined flag instruments it. With the fuzzer sanitizer SwiftPM compiles the
# program as a library and links libFuzzer's main, which calls LLVMFuzzerTestOneInput; the define leaves
# out the entry point (Sources/casevault-fuzz/Entry.swift) that an ordinary build uses to replay files.
# Its working corpus (.build-fuzz/corpus/<target>) keeps growing
# from run to run; the seeds are copied into it before each run.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT="${SWIFT:-swift}"
SCRATCH=.build-fuzz
CONFIGURATION="${FUZZ_CONFIGURATION:-release}"
SEEDS=Tests/fuzz-corpus

merge=0
if [[ "${1:-}" == "--merge" ]]; then
    merge=1
    shift
fi
seconds=60
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
# The targets: every directory of the seed corpus (the corpus replay test holds them to FuzzTargets.all).
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for directory in "$SEEDS"/*/; do
        targets+=("$(basename "$directory")")
    done
fi
for name in "${targets[@]}"; do
    [[ -d "$SEEDS/$name" ]] || { echo "fuzz: no target $name (no $SEEDS/$name)" >&2; exit 2; }
done

echo "fuzz: building casevault-fuzz ($CONFIGURATION, libFuzzer + AddressSanitizer) in $SCRATCH"
"$SWIFT" build --product casevault-fuzz --scratch-path "$SCRATCH" -c "$CONFIGURATION" --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DCASEVAULT_LIBFUZZER
BIN="$("$SWIFT" build --scratch-path "$SCRATCH" -c "$CONFIGURATION" --show-bin-path)/casevault-fuzz"
# Leaks in third-party code, each explained there (TOMLKit, FoundationEssentials); nothing of CaseVault's.
export LSAN_OPTIONS="suppressions=$PWD/Tests/support/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

# The targets' private temporary directories (FuzzEnvironment) go into one directory of this run, removed at
# the end even when a finding left files behind: on tmpfs when there is one, since a restore and the audit
# log's open flush what they write, and on a disk the flushes would take most of each input's time.
mkdir -p "$SCRATCH"
tmp=$(mktemp -d "${FUZZ_TMPDIR:-/dev/shm}/casevault-fuzz.XXXXXX" 2>/dev/null || mktemp -d "$PWD/$SCRATCH/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp"

if [[ "$merge" == 1 ]]; then
    for name in "${targets[@]}"; do
        found="$SCRATCH/corpus/$name"
        if [[ ! -d "$found" ]]; then
            echo "fuzz: $name: nothing to merge (no $found yet)"
            continue
        fi
        before=$(find "$SEEDS/$name" -type f | wc -l)
        CASEVAULT_FUZZ_TARGET="$name" "$BIN" -merge=1 "$SEEDS/$name" "$found" >"$SCRATCH/merge-$name.log" 2>&1 \
            || { echo "fuzz: $name: the merge failed; see $SCRATCH/merge-$name.log" >&2; exit 1; }
        after=$(find "$SEEDS/$name" -type f | wc -l)
        echo "fuzz: $name: $((after - before)) input(s) added to $SEEDS/$name ($after now)"
    done
    exit 0
fi

TIMEFORMAT='%3U %3S'
findings=0
total_runs=0
total_cpu=0
for name in "${targets[@]}"; do
    corpus="$SCRATCH/corpus/$name"
    artifacts="$SCRATCH/artifacts/$name"
    log="$SCRATCH/fuzz-$name.log"
    mkdir -p "$corpus"
    rm -rf "$artifacts"
    mkdir -p "$artifacts"
    cp "$SEEDS/$name"/* "$corpus"/ 2>/dev/null || true

    set +e
    { time CASEVAULT_FUZZ_TARGET="$name" "$BIN" "$corpus" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-} >"$log" 2>&1; } 2>"$SCRATCH/time-$name"
    status=$?
    set -e

    # The inputs run: libFuzzer's final stats, or (cut short by a finding) its last status line `#N …`.
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
    [[ -n "$runs" ]] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    runs="${runs:-0}"
    # libFuzzer's last status line: `#N DONE cov: … corp: INPUTS/SIZE …` (or the last before a finding).
    corp=$(grep -E '^#[0-9]+' "$log" | grep -o 'corp: [0-9]*/[^ ]*' | tail -n 1 | sed 's/^corp: //' || true)
    inputs="${corp%%/*}"
    size="${corp#*/}"
    [[ -n "$corp" ]] || { inputs=$(find "$corpus" -type f | wc -l); size="?"; }
    cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$SCRATCH/time-$name")
    total_runs=$((total_runs + runs))
    total_cpu=$(awk -v a="$total_cpu" -v b="$cpu" 'BEGIN { printf "%.1f", a + b }')

    found=()
    for artifact in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
        [[ -f "$artifact" ]] && found+=("$artifact")
    done
    if [[ ${#found[@]} -eq 0 && "$status" -ne 0 ]]; then
        echo "fuzz: $name: libFuzzer stopped with status $status and left no input; the end of its log ($log):"
        tail -n 30 "$log"
        findings=$((findings + 1))
        continue
    fi
    printf 'fuzz: %-16s %10s inputs run, corpus %s inputs (%s), %s CPU-s\n' "$name" "$runs" "$inputs" "$size" "$cpu"
    for artifact in "${found[@]}"; do
        findings=$((findings + 1))
        kept="$SEEDS/$name/$(basename "$artifact")"
        cp "$artifact" "$kept"
        echo "fuzz: $name: FINDING $(basename "$artifact"), kept as $kept ($(wc -c <"$artifact") bytes); the input:"
        od -A x -t x1z -v "$artifact" | head -n 16
        echo "fuzz: $name: the end of libFuzzer's report ($log):"
        grep -v -E '^(#[0-9]+|INFO:|stat::)' "$log" | tail -n 40
        echo "fuzz: replay it: CASEVAULT_FUZZ_TARGET=$name $BIN $kept"
    done
done

echo "fuzz: ${#targets[@]} target(s), $total_runs inputs run, $total_cpu CPU-seconds, $findings finding(s)"
[[ "$findings" -eq 0 ]]
