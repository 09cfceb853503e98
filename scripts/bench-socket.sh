#!/usr/bin/env bash
# Over the socket: gets and durable puts of 4 KiB records against a release casevaultd, at 1 and
# 16 connections, and in the same run nginx serving a 4 KiB static file on a Unix socket to the same load
# generator (casevault-load), and Hummingbird alone (casevault-floor: the same stack answering every GET with
# a constant 4 KiB body, the most casevaultd could serve here; run both with the event loops as Swift's
# executor, as casevaultd runs, and with the cooperative pool, which a bare server may prefer). Prints
# figures; asserts nothing. Needs root for apt (nginx) when it is missing.
#   scripts/bench-socket.sh [SECONDS]       (default 5 per figure)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
BIN=.build/release
for tool in casevaultd casevault-load casevault-floor; do
    [[ -x "$BIN/$tool" ]] || { echo "build first: swift build -c release" >&2; exit 1; }
done
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "installing nginx (for the comparison figure)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/casevault-socket-bench-XXXXXX)
chmod 755 "$work"
cleanup() {
    [[ -n "${recorder:-}" ]] && kill "$recorder" 2>/dev/null || true
    [[ -n "${floor:-}" ]] && kill "$floor" 2>/dev/null && wait "$floor" 2>/dev/null || true
    [[ -n "${floor_pool:-}" ]] && kill "$floor_pool" 2>/dev/null && wait "$floor_pool" 2>/dev/null || true
    [[ -f "$work/nginx/nginx.pid" ]] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    [[ -n "${daemon:-}" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# nginx: two workers (one per core here), a 4 KiB file, no access log.
mkdir -p "$work/nginx/www"
head -c 4096 /dev/urandom > "$work/nginx/www/record.bin"
chmod -R a+rX "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000000;
    sendfile on;
    server { listen unix:$work/nginx/nginx.sock; root $work/nginx/www; }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx"

# The framework floor: Hummingbird and SwiftNIO set up as casevaultd sets them up, doing nothing else.
"$BIN/casevault-floor" --socket "$work/floor.sock" > "$work/floor.log" 2>&1 &
floor=$!
"$BIN/casevault-floor" --pool --socket "$work/floor-pool.sock" > "$work/floor-pool.log" 2>&1 &
floor_pool=$!

# casevaultd: release build, its own data directory, this user as director.
mkdir -p "$work/vault"
cat > "$work/vault/casevault.toml" <<CONF
[store]
data_directory = "$work/vault/data"
root_key_file = "$work/vault/keys/root.key"
max_content_bytes = 1048576
[server]
socket_path = "$work/vault/run/casevault.sock"
max_body_bytes = 2097152
[roles]
director = ["self"]
CONF
"$BIN/casevaultd" --config "$work/vault/casevault.toml" --log-level warning > "$work/vault/daemon.log" 2>&1 &
daemon=$!
sock="$work/vault/run/casevault.sock"
for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://casevault/v1/health >/dev/null 2>&1 && break; sleep 0.1; done

# 200 cases, one 4 KiB intake form each to read; puts go round the cases (a case holds tens of records).
filler=$(head -c 3000 /dev/urandom | base64 -w0 | head -c 4000)
printf '{"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "%s"}}' "$filler" > "$work/put.json"
: > "$work/gets.txt"; : > "$work/puts.txt"
for _ in $(seq 200); do
    case_id=$(curl -s --unix-socket "$sock" -H 'Content-Type: application/json' \
        -d '{"participants": [{"name": "a"}, {"name": "b"}]}' http://casevault/v1/cases | sed 's/.*"case_id":"\([0-9a-f]*\)".*/\1/')
    record=$(curl -s --unix-socket "$sock" -H 'Content-Type: application/json' --data-binary @"$work/put.json" \
        "http://casevault/v1/cases/$case_id/records" | sed 's/.*"record_id":"\([0-9a-f]*\)".*/\1/')
    echo "/v1/records/$record" >> "$work/gets.txt"
    echo "/v1/cases/$case_id/records" >> "$work/puts.txt"
done

# Figures for scripts/bench-summary.sh when CASEVAULT_BENCH_FIGURES names a file: `name value` lines.
figure() { if [[ -n "${CASEVAULT_BENCH_FIGURES:-}" ]]; then echo "$1 $2" >> "$CASEVAULT_BENCH_FIGURES"; fi; }
# Runs casevault-load with the arguments after NAME, prints its line, and records its rate, p50 and p99
# (ms) as NAME_rate, NAME_p50 and NAME_p99, and its failed requests as NAME_failed; leaves the number of
# requests made in $answered.
load() {
    local name=$1 line rate p50 p99 failed
    shift
    line=$("$BIN/casevault-load" "$@")
    echo "$line"
    read -r rate p50 p99 answered failed < <(sed -E 's/.* ([0-9]+) req\/s +p50 +([0-9.]+) ms +p99 +([0-9.]+) ms +\(([0-9]+) requests, ([0-9]+) failed.*/\1 \2 \3 \4 \5/' <<< "$line")
    figure "${name}_rate" "$rate"; figure "${name}_p50" "$p50"; figure "${name}_p99" "$p99"
    figure "${name}_failed" "$failed"
}
# CPU time (user + system, in clock ticks) and context switches so far of every thread of the processes.
usage() {
    local ticks=0 switches=0 pid task
    for pid in "$@"; do
        ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        for task in /proc/"$pid"/task/*; do
            switches=$((switches + $(awk '/ctxt_switches/ {n += $2} END {print n + 0}' "$task/status" 2>/dev/null || echo 0)))
        done
    done
    echo "$ticks $switches"
}
# The server's CPU and context switches per request between two `usage` readings, over $answered requests.
cost() {
    local before=$1 after=$2 t0 s0 t1 s1
    read -r t0 s0 <<< "$before"
    read -r t1 s1 <<< "$after"
    awk -v n="$answered" -v t=$((t1 - t0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (n > 0) printf "%.0f %.1f", t / hz * 1e6 / n, s / n; else printf "0 0" }'
}
master=$(cat "$work/nginx/nginx.pid")
nginx="$master $(pgrep -P "$master" | tr '\n' ' ' || true)"

echo "Over the Unix socket, $SECS s per figure, $(nproc) cores (load generator on the same machine)"
figure cores "$(nproc)"
for conn in 1 16; do
    before=$(usage $nginx)
    load "nginx_get_$conn" --label "nginx static GET     " --socket "$work/nginx/nginx.sock" --path /record.bin \
        --connections $conn --seconds "$SECS"
    read -r nginx_cpu nginx_switches <<< "$(cost "$before" "$(usage $nginx)")"
    before=$(usage "$floor")
    load "floor_get_$conn" --label "Hummingbird alone GET" --socket "$work/floor.sock" --path /record.bin \
        --connections $conn --seconds "$SECS"
    read -r floor_cpu floor_switches <<< "$(cost "$before" "$(usage "$floor")")"
    before=$(usage "$floor_pool")
    load "floor_pool_get_$conn" --label "Hummingbird alone, pool" --socket "$work/floor-pool.sock" --path /record.bin \
        --connections $conn --seconds "$SECS"
    read -r floor_pool_cpu _ <<< "$(cost "$before" "$(usage "$floor_pool")")"
    before=$(usage "$daemon")
    load "get_$conn" --label "casevaultd GET record" --socket "$sock" --paths-file "$work/gets.txt" \
        --connections $conn --seconds "$SECS"
    read -r daemon_cpu daemon_switches <<< "$(cost "$before" "$(usage "$daemon")")"
    # Where the time goes, without a profiler: what each server spends per request.
    echo "  where the time goes, GET with $conn connection(s): casevaultd $daemon_cpu us of CPU and" \
        "$daemon_switches context switches per request; Hummingbird alone $floor_cpu us and $floor_switches;" \
        "nginx $nginx_cpu us and $nginx_switches"
    figure "get_${conn}_cpu_us" "$daemon_cpu"; figure "nginx_get_${conn}_cpu_us" "$nginx_cpu"
    figure "floor_get_${conn}_cpu_us" "$floor_cpu"; figure "floor_pool_get_${conn}_cpu_us" "$floor_pool_cpu"
    before=$(usage "$daemon")
    load "put_$conn" --label "casevaultd durable PUT" --socket "$sock" --method POST --paths-file "$work/puts.txt" \
        --body-file "$work/put.json" --connections $conn --seconds "$SECS"
    read -r put_cpu put_switches <<< "$(cost "$before" "$(usage "$daemon")")"
    before=$(usage "$floor_pool")
    load "floor_post_$conn" --label "Hummingbird alone POST" --socket "$work/floor-pool.sock" --method POST \
        --path /records --body-file "$work/put.json" --connections $conn --seconds "$SECS"
    read -r floor_post_cpu _ <<< "$(cost "$before" "$(usage "$floor_pool")")"
    figure "floor_post_${conn}_cpu_us" "$floor_post_cpu"
    echo "  where the time goes, PUT with $conn connection(s): casevaultd $put_cpu us of CPU and" \
        "$put_switches context switches per request; Hummingbird alone $floor_post_cpu us"
    figure "put_${conn}_cpu_us" "$put_cpu"; figure "put_${conn}_switches" "$put_switches"
    figure "get_${conn}_switches" "$daemon_switches"
done

# Where the time goes, with a profiler: each socket figure's load again, this time under `perf record`
# (after the figures, so that the profiler's cost is in none of them), summed up by part of the stack
# (scripts/perf-summary.py). Skipped when perf is missing or may not profile here.
PERF=$(command -v perf || true)
# The probe attaches to the daemon itself: it is not dumpable (PR_SET_DUMPABLE 0), so only a profiler
# with CAP_SYS_PTRACE (root) may.
if [[ -n "$PERF" ]] && "$PERF" record -q -p "$daemon" -o "$work/probe.data" -- sleep 0.1 >/dev/null 2>&1; then
    profile() {
        local label=$1 line
        shift
        rm -f "$work/perf.data"
        "$PERF" record -q -F 499 -g -p "$daemon" -o "$work/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
        recorder=$!
        "$BIN/casevault-load" "$@" --seconds "$SECS" >/dev/null
        wait "$recorder" || true
        recorder=
        line=$("$PERF" script -i "$work/perf.data" 2>/dev/null | python3 scripts/perf-summary.py "$label") \
            || line="where the time goes, $label: no profile (perf could not record it)"
        echo "  $line"
        if [[ -n "${CASEVAULT_BENCH_FIGURES:-}" ]]; then echo "$line" >> "$CASEVAULT_BENCH_FIGURES.profile"; fi
    }
    profile "GET, 16 connections" --socket "$sock" --paths-file "$work/gets.txt" --connections 16
    profile "GET, 1 connection" --socket "$sock" --paths-file "$work/gets.txt" --connections 1
    profile "durable PUT, 16 connections" --socket "$sock" --method POST --paths-file "$work/puts.txt" \
        --body-file "$work/put.json" --connections 16
else
    echo "  where the time goes: no profile (perf is missing, or may not attach to the daemon: that needs root or CAP_SYS_PTRACE)"
fi

# A 1 GiB attachment in and out: time, and the daemon's peak resident memory before and after.
peak() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$daemon/status"; }
record=$(sed -n '1s|/v1/records/||p' "$work/gets.txt")
head -c $((1 << 30)) /dev/urandom > "$work/attachment.bin"
before=$(peak)
start=$(date +%s.%N)
curl -s -o /dev/null --unix-socket "$sock" -H 'Content-Type: application/pdf' \
    -T "$work/attachment.bin" "http://casevault/v1/records/$record/attachment"
middle=$(date +%s.%N)
curl -s -o "$work/attachment.out" --unix-socket "$sock" "http://casevault/v1/records/$record/attachment"
end=$(date +%s.%N)
cmp -s "$work/attachment.bin" "$work/attachment.out" && same=identical || same=DIFFERENT
printf 'attachment 1 GiB: upload %.1f s, download %.1f s, %s; daemon peak RSS %d MiB before, %d MiB after\n' \
    "$(awk "BEGIN {print $middle - $start}")" "$(awk "BEGIN {print $end - $middle}")" "$same" "$before" "$(peak)"

# The same reads with [audit] durable_reads = true: every answer waits for its entry's device flush.
kill -TERM "$daemon"; wait "$daemon" 2>/dev/null || true
printf '[audit]\ndurable_reads = true\n' >> "$work/vault/casevault.toml"
"$BIN/casevaultd" --config "$work/vault/casevault.toml" --log-level warning >> "$work/vault/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://casevault/v1/health >/dev/null 2>&1 && break; sleep 0.1; done
for conn in 1 16; do
    load "durable_get_$conn" --label "GET, durable_reads   " --socket "$sock" --paths-file "$work/gets.txt" \
        --connections $conn --seconds "$SECS"
done
