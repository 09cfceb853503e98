#!/usr/bin/env bash
# One hostile local user against the director: the hostile user, who may open cases (so the
# daemon waits for its bodies), holds every connection it may (server.max_connections_per_user, default
# 128 of 256) with request bodies trickled a byte a second, reconnecting whenever one is cut off; a peer
# with no role floods requests too. Meanwhile the director's requests are timed, and again without the
# attack. Prints figures; asserts nothing. Needs root (it acts as other uids through setpriv).
#   scripts/bench-slow-peers.sh [SECONDS]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
BIN=.build/release
for tool in casevaultd casevault-load; do
    [[ -x "$BIN/$tool" ]] || { echo "build first: swift build -c release" >&2; exit 1; }
done
TORTURE="$BIN/casevault-torture"
[[ -x "$TORTURE" ]] || TORTURE=.build/debug/casevault-torture
[[ $(id -u) == 0 ]] || { echo "run as root (the attack and the director run as other uids)" >&2; exit 1; }

work=$(mktemp -d /tmp/casevault-slow-peers-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    pkill -f "casevault-torture trickle $work" 2>/dev/null || true
    [[ -n "${daemon:-}" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/casevault.toml" <<CONF
[store]
data_directory = "$work/data"
root_key_file = "$work/keys/root.key"
max_content_bytes = 65536
[server]
socket_path = "$work/run/casevault.sock"
max_body_bytes = 131072
socket_group = "gid:3000"
[roles]
director = ["uid:4001", "uid:4003"]
CONF
"$BIN/casevaultd" --config "$work/casevault.toml" --log-level warning > "$work/daemon.log" 2>&1 &
daemon=$!
sock="$work/run/casevault.sock"
for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://casevault/v1/health >/dev/null 2>&1 && break; sleep 0.1; done
as() { local uid=$1; shift; setpriv --reuid "$uid" --regid 3000 --clear-groups "$@"; }

director() {
    as 4001 "$BIN/casevault-load" --label "$1" --socket "$sock" --path /v1/whoami --connections 1 --seconds "$SECS"
}
echo "The director's requests (GET /v1/whoami, one connection, $SECS s), $(nproc) cores"
director "no attack                         "
for _ in $(seq 128); do
    ( while true; do as 4003 "$TORTURE" trickle "$sock" --interval-ms 1000 >/dev/null 2>&1 || sleep 0.1; done ) &
    pids+=($!)
done
( while true; do as 4999 curl -s -o /dev/null --unix-socket "$sock" http://casevault/v1/whoami || true; done ) &
pids+=($!)
sleep 3
director "128 trickled bodies + role-less flood"
