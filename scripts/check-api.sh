#!/usr/bin/env bash
# make check-api: Schemathesis runs the whole of docs/openapi.yaml against a real casevaultd, as the user of
# each role, and wants 0 server errors, 0 responses that break the document and 0 refused requests that
# changed data.
#
#   scripts/check-api.sh [BIN]        (as root; BIN: the built binaries, default .build/debug)
#
# What it does:
# - a throw-away root (mktemp -d) with two daemons, each with its configuration, data, keys and socket:
#   `vault`, the embedded default's key source (a key file: it serves at once, and init, unseal and seal
#   answer 409 wrong-key-source), with one numeric uid mapped to each role (director, mediator, intake,
#   submitter, statistician, operator, each office) and one more uid that holds none; and
#   `passphrase-vault` (keys.source = "passphrase", at the floor's Argon2id cost), initialised with
#   casevaultctl init as the tests do, which Schemathesis drives as its operator: init, unseal, seal, and
#   every other route once it is sealed;
# - per run, a loopback TCP bridge to the daemon's socket (scripts/check-api-bridge.py) run as the role's
#   uid with setpriv, so the daemon's SO_PEERCRED sees that uid: 127.0.0.1 only, a port the kernel picks,
#   bounded in connections and in time, gone with this script;
# - before each run on `vault`, fresh fixtures (scripts/check-api-fixtures.py, as the director and the
#   mediator): cases open, closed and held, a record of each type, an attachment, a shredded record and
#   certificates, whose ids Tests/support/schemathesis-hooks.py puts in the generated requests;
# - `schemathesis run` with every check (`--checks all`) and the hooks' own check,
#   `refused_request_changed_nothing`: an answer of 400 or more must leave the index's rows and the vault's
#   files as they were (the audit log and the unseal throttle aside). One worker, a fixed seed,
#   CHECK_API_EXAMPLES test cases per operation and phase. Bounded in time: each run gets at most
#   CHECK_API_ROLE_SECONDS, and less when the whole (CHECK_API_SECONDS) would run out (timeout kills it,
#   and that run fails);
# - prints Schemathesis's output for each run (each failure with its curl reproduction), a line of
#   figures per run and a summary, and exits 1 if any run failed. The daemons, the bridges and the root
#   are removed on exit.
#
# Settings (environment): SCHEMATHESIS (the command; make check-api passes its pinned one),
# CHECK_API_EXAMPLES (default 30), CHECK_API_SEED (default 20261130), CHECK_API_SECONDS (default 540),
# CHECK_API_ROLE_SECONDS (default 90), CHECK_API_ROLES (some of the runs, such as "director operator none
# operator@passphrase-vault"), CHECK_API_REPORTS (a directory to keep each run's output, JSON report, call
# log and fixtures in, and the daemons' logs).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
BIN=$(cd "${1:-.build/debug}" && pwd)
EXAMPLES="${CHECK_API_EXAMPLES:-30}"
SEED="${CHECK_API_SEED:-20261130}"
TOTAL_SECONDS="${CHECK_API_SECONDS:-540}"
ROLE_SECONDS="${CHECK_API_ROLE_SECONDS:-90}"
REPORTS="${CHECK_API_REPORTS:-}"

fail() { echo "check-api: $*" >&2; exit 2; }
[[ "$(id -u)" == 0 ]] || fail "run as root: the bridges act as other uids with setpriv"
[[ -x "$BIN/casevaultd" && -x "$BIN/casevaultctl" ]] || fail "no $BIN/casevaultd or casevaultctl: build first (make check-api does)"
SCHEMATHESIS="${SCHEMATHESIS:-schemathesis}"
[[ "$SCHEMATHESIS" != */* ]] || SCHEMATHESIS="$(cd "$(dirname "$SCHEMATHESIS")" && pwd)/$(basename "$SCHEMATHESIS")"
for tool in setpriv curl timeout python3 "$SCHEMATHESIS"; do
    command -v "$tool" >/dev/null || fail "$tool is missing (make check-api installs what it needs)"
done

# Each role's uid. The clients' group is every bridge's primary group, as the tests' peers have it.
CLIENTS_GID=3000
declare -A UID_OF=(
    [director]=4001 [mediator]=4002 [intake]=4003 [submitter]=4004 [statistician]=4005 [operator]=4006
    [office:title-ix]=4007 [office:equity]=4008 [office:campus-safety]=4009 [office:general-counsel]=4010
    [none]=4099
)
# A run is ROLE (on `vault`) or ROLE@DAEMON.
ALL_RUNS="director mediator intake submitter statistician operator office:title-ix office:equity office:campus-safety"
ALL_RUNS+=" office:general-counsel none operator@passphrase-vault"
RUNS="${CHECK_API_ROLES:-$ALL_RUNS}"
for run in $RUNS; do [[ " $ALL_RUNS " == *" $run "* ]] || fail "unknown run $run (one of: $ALL_RUNS)"; done

ROOT=$(mktemp -d /tmp/casevault-check-api.XXXXXX)
chmod 0755 "$ROOT"  # other uids reach the sockets' directories through it
DAEMON_PIDS=()
BRIDGE_PIDS=()
RUN_PID=""
# kill_tree PID: SIGTERM to PID and every process below it (Schemathesis under timeout under the subshell).
kill_tree() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
cleanup() {
    local status=$? pid
    [[ -z "$RUN_PID" ]] || { kill_tree "$RUN_PID"; wait "$RUN_PID" 2>/dev/null || true; }
    for pid in "${BRIDGE_PIDS[@]}" "${DAEMON_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BRIDGE_PIDS[@]}" "${DAEMON_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$ROOT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the daemons --------------------------------------------------------------------------------------
roles_toml=""
for role in director mediator intake submitter statistician operator; do
    roles_toml+="$role = [\"uid:${UID_OF[$role]}\"]"$'\n'
done
for office in title-ix equity campus-safety general-counsel; do
    roles_toml+="\"office:$office\" = [\"uid:${UID_OF[office:$office]}\"]"$'\n'
done

# start_daemon NAME KEYS_TOML: writes ROOT/NAME/casevault.toml and starts casevaultd on it.
start_daemon() {
    local name="$1" keys="$2" dir="$ROOT/$1"
    mkdir -p "$dir"
    chmod 0755 "$dir"
    cat >"$dir/casevault.toml" <<EOF
[store]
data_directory = "$dir/data"
root_key_file = "$dir/keys/root.key"
max_content_bytes = 65536
$keys
[server]
socket_path = "$dir/run/casevault.sock"
max_body_bytes = 131072
socket_group = "gid:$CLIENTS_GID"
[roles]
$roles_toml
[offices]
sexual_harassment = "title-ix"
discrimination = "equity"
intent_to_harm = "campus-safety"
mediator_defense = "general-counsel"
EOF
    # --pdeathsig: should this script be killed outright, the daemon (and each bridge) get SIGTERM all the same.
    setpriv --pdeathsig TERM "$BIN/casevaultd" --config "$dir/casevault.toml" --log-level info >"$dir/daemon.log" 2>&1 &
    DAEMON_PIDS+=($!)
    local pid=$! socket="$dir/run/casevault.sock"
    for _ in $(seq 300); do
        curl -sf --max-time 2 --unix-socket "$socket" http://casevault/v1/health >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; fail "casevaultd ($name) exited"; }
        sleep 0.1
    done
    curl -sf --max-time 2 --unix-socket "$socket" http://casevault/v1/health >/dev/null || fail "casevaultd ($name) does not answer"
}

start_daemon vault ""
echo "check-api: vault: casevaultd $(curl -s --unix-socket "$ROOT/vault/run/casevault.sock" http://casevault/v1/health)"
if [[ " $RUNS " == *@passphrase-vault* ]]; then
    start_daemon passphrase-vault $'[keys]\nsource = "passphrase"\nargon2_operations = 2\nargon2_memory_mib = 64'
    # As the tests do: casevaultctl init as root, the passphrase on standard input; the vault is then unsealed.
    head -c 24 /dev/urandom | base64 | "$BIN/casevaultctl" init --stdin --socket "$ROOT/passphrase-vault/run/casevault.sock" \
        >"$ROOT/passphrase-vault/init.txt" 2>&1 || { cat "$ROOT/passphrase-vault/init.txt" >&2; fail "casevaultctl init failed"; }
    echo "check-api: passphrase-vault: initialised, casevaultd" \
        "$(curl -s --unix-socket "$ROOT/passphrase-vault/run/casevault.sock" http://casevault/v1/health)"
fi

# --- the bridges ----------------------------------------------------------------------------------------
# The bridge runs as an unprivileged uid, which must be able to run the interpreter (not one under /root).
BRIDGE_PYTHON=""
for candidate in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3)"; do
    if [[ -x "$candidate" ]] && setpriv --reuid "${UID_OF[none]}" --regid "$CLIENTS_GID" --clear-groups "$candidate" -c '' 2>/dev/null; then
        BRIDGE_PYTHON="$candidate"
        break
    fi
done
[[ -n "$BRIDGE_PYTHON" ]] || fail "no python3 that an unprivileged uid can run (apt-get install python3)"

declare -A URL_OF
BRIDGE_SECONDS=$((TOTAL_SECONDS + 120))
start_bridge() { # RUN: ROLE or ROLE@DAEMON
    local run="$1" role="${1%@*}" daemon=vault
    [[ "$run" != *@* ]] || daemon="${run#*@}"
    local uid="${UID_OF[$role]}" dir="$ROOT/bridge-${run//[:@]/-}"
    mkdir -p "$dir"
    chown "$uid:$CLIENTS_GID" "$dir"
    setpriv --reuid "$uid" --regid "$CLIENTS_GID" --clear-groups --pdeathsig TERM \
        "$BRIDGE_PYTHON" "$REPO/scripts/check-api-bridge.py" "$ROOT/$daemon/run/casevault.sock" "$dir/port" \
        --max-seconds "$BRIDGE_SECONDS" --max-concurrent 16 --max-connections 100000 \
        </dev/null >"$dir/log" 2>&1 &
    BRIDGE_PIDS+=($!)
    for _ in $(seq 100); do [[ -s "$dir/port" ]] && break; sleep 0.05; done
    [[ -s "$dir/port" ]] || { cat "$dir/log" >&2; fail "the bridge for $run did not start"; }
    URL_OF[$run]="http://127.0.0.1:$(cat "$dir/port")"
    echo "check-api: $run (uid $uid) on ${URL_OF[$run]}: $(curl -s --max-time 5 "${URL_OF[$run]}/v1/whoami")"
}
for run in director mediator $RUNS; do
    [[ -n "${URL_OF[$run]:-}" ]] || start_bridge "$run"
done

# --- Schemathesis's configuration -------------------------------------------------------------------------
# 410 is the documented answer to a well-formed request about a shredded record (the fixtures hold some);
# Schemathesis's positive_data_acceptance does not count it as accepting by default. The cache (`st
# replay`) would outlive nothing here: each failure prints its curl reproduction instead.
cat >"$ROOT/schemathesis.toml" <<'EOF'
[cache]
enabled = false

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]
EOF

# --- one Schemathesis run per role ----------------------------------------------------------------------
declare -A FIGURES
failed_runs=()
started=$SECONDS
deadline=$((SECONDS + TOTAL_SECONDS))
runs_left=$(wc -w <<<"$RUNS")
for run in $RUNS; do
    # This run's bound: CHECK_API_ROLE_SECONDS, or what is left of the whole less 15 s for each run to come.
    bound=$((deadline - SECONDS - 15 * (runs_left - 1)))
    ((bound <= ROLE_SECONDS)) || bound=$ROLE_SECONDS
    ((bound >= 15)) || bound=15
    runs_left=$((runs_left - 1))
    role="${run%@*}" daemon=vault
    [[ "$run" != *@* ]] || daemon="${run#*@}"
    name="${run//[:@]/-}"
    work="$ROOT/run-$name"
    mkdir -p "$work"
    echo
    echo "==================== check-api: $run (uid ${UID_OF[$role]}, at most $bound s) ===================="
    if [[ "$daemon" == vault ]]; then
        python3 scripts/check-api-fixtures.py "${URL_OF[director]}" "${URL_OF[mediator]}" \
            "${UID_OF[director]}" "${UID_OF[mediator]}" "$work/fixtures.json"
    else
        echo '{}' >"$work/fixtures.json"
    fi
    # In the background, and waited for: a signal to this script then stops the run at once.
    {
        (
            cd "$work"
            SCHEMATHESIS_HOOKS="$REPO/Tests/support/schemathesis-hooks.py" \
            CASEVAULT_CHECK_DATA="$ROOT/$daemon/data" CASEVAULT_CHECK_KEYS="$ROOT/$daemon/keys" \
            CASEVAULT_CHECK_FIXTURES="$work/fixtures.json" CASEVAULT_CHECK_CALL_LOG="$work/calls.log" \
            NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
            timeout --kill-after=10 "$bound" \
                "$SCHEMATHESIS" --config-file "$ROOT/schemathesis.toml" run "$REPO/docs/openapi.yaml" \
                --url "${URL_OF[$run]}" --checks all --continue-on-failure --workers 1 \
                --max-examples "$EXAMPLES" --seed "$SEED" --generation-database none --request-timeout 30 \
                --no-color --report json --report-json-path "$work/report.json"
        ) 2>&1 | tee "$work/output.txt"
        exit "${PIPESTATUS[0]}"
    } &
    RUN_PID=$!
    status=0
    wait "$RUN_PID" || status=$?
    RUN_PID=""
    if [[ "$status" == 124 || "$status" == 137 ]]; then
        FIGURES[$run]="TIMED OUT after $bound s (CHECK_API_ROLE_SECONDS, CHECK_API_SECONDS)"
        failed_runs+=("$run")
    elif [[ -s "$work/report.json" ]]; then
        FIGURES[$run]=$(python3 - "$work/report.json" "$work/calls.log" <<'EOF'
import collections, json, sys
report = json.load(open(sys.argv[1]))
statuses, effects = collections.Counter(), collections.Counter()
try:
    for line in open(sys.argv[2]):
        status, effect = line.split()[2:4]
        statuses[status[0] + "xx"] += 1
        effects[("refused" if int(status) >= 400 else "accepted", effect)] += 1
except FileNotFoundError:
    pass
operations, cases = report["operations"], report["test_cases"]
codes = ", ".join(f"{f['code']} {f['title'].lower()} x{f['count']}" for f in report.get("failures", []))
calls = " ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
print(f"{operations['tested']}/{operations['total']} operations, {cases['generated']} test cases, "
      f"{cases['unique_failures']} failures{' (' + codes + ')' if codes else ''}, {len(report.get('errors', []))} errors, "
      f"{report['running_time']:.0f} s; answers: {calls or 'none logged'}; vault changed by "
      f"{effects[('accepted', 'changed')]} accepted and {effects[('refused', 'changed')]} refused requests")
EOF
)
        [[ "$status" == 0 ]] || failed_runs+=("$run")
    else
        FIGURES[$run]="no report (schemathesis exited $status)"
        failed_runs+=("$run")
    fi
    if [[ -n "$REPORTS" ]]; then
        mkdir -p "$REPORTS"
        for file in output.txt report.json calls.log fixtures.json; do
            [[ ! -e "$work/$file" ]] || cp "$work/$file" "$REPORTS/$name.$file"
        done
    fi
done

for pid in "${DAEMON_PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "check-api: a casevaultd died during the run" >&2
        failed_runs+=("(daemon)")
    fi
done
if [[ -n "$REPORTS" ]]; then
    for daemon in vault passphrase-vault; do
        [[ ! -e "$ROOT/$daemon/daemon.log" ]] || cp "$ROOT/$daemon/daemon.log" "$REPORTS/$daemon.daemon.log"
    done
fi

echo
echo "==================== check-api: summary (seed $SEED, $EXAMPLES examples per operation) ===================="
for run in $RUNS; do
    printf '%-27s %s\n' "$run" "${FIGURES[$run]}"
done
elapsed=$((SECONDS - started))
if ((${#failed_runs[@]})); then
    echo "check-api: each failure's curl line names a bridge that is gone; against a daemon, the same request as"
    echo "  that role's uid: setpriv --reuid UID --regid $CLIENTS_GID --clear-groups curl --unix-socket SOCKET http://casevault/PATH"
    echo "  (uids: $(for run in $RUNS; do printf '%s %s, ' "$run" "${UID_OF[${run%@*}]}"; done | sed 's/, $//'))"
    echo "check-api: FAILED for ${#failed_runs[@]} of $(wc -w <<<"$RUNS") runs (${failed_runs[*]}), in ${elapsed} s"
    exit 1
fi
echo "check-api: passed for every run ($(wc -w <<<"$RUNS")), in ${elapsed} s"
