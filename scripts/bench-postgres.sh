#!/usr/bin/env bash
# make bench, issue 19: the PostgreSQL ceiling on this machine, what a vault on PostgreSQL is to be measured
# against. A throw-away PostgreSQL 15 cluster on Unix sockets in a temporary directory (as `nobody` under
# root, since PostgreSQL refuses root), then pgbench: plain INSERTs of 4 KiB rows (TOAST without compression,
# as sealed bytes are), each its own durable commit (fsync and synchronous_commit on, the defaults), from 16
# clients and from 1; then the same with a synchronous streaming standby on the same disk (what a failover
# that loses no acknowledged write needs); then a release casevaultd keeping its vault in that database
# (primary and synchronous standby): durable PUTs and GETs of 4 KiB records over its socket at 16 and 1
# connections (casevault-load), as bench-socket.sh measures the local store. Appends `name value` lines to
# $CASEVAULT_BENCH_FIGURES, prints; asserts nothing.
#   scripts/bench-postgres.sh [SECONDS]
set -euo pipefail
seconds=${1:-5}
bin=/usr/lib/postgresql/15/bin
figures=${CASEVAULT_BENCH_FIGURES:-/dev/null}
# The script works in its cluster's directory: a relative path (as make bench gives) is taken from here.
case $figures in /*) ;; *) figures=$PWD/$figures ;; esac
release=$(cd "$(dirname "$0")/.." && pwd)/.build/release
scripts=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$bin/pgbench" ]; then
    echo "PostgreSQL 15 is not installed ($bin): the PostgreSQL ceiling is left out"
    exit 0
fi
root=$(mktemp -d /tmp/casevault-pgbench-XXXXXX)
as_owner() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    chown nobody:nogroup "$root"
    as_owner() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
fi
cleanup() {
    if [ -n "${daemon:-}" ]; then kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true; fi
    for data in "$root/standby" "$root/primary"; do
        [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$root"
}
trap cleanup EXIT
cd "$root"
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS PGSSLMODE

start() { # DATA PORT
    cat >>"$1/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$root'
port = $2
max_connections = 40
EOF
    as_owner "$bin/pg_ctl" -D "$1" -l "$1.log" -w start >/dev/null
}

as_owner "$bin/initdb" -D "$root/primary" -A trust -U bench --no-instructions >/dev/null
start "$root/primary" 5441
as_owner "$bin/psql" -qX -h "$root" -p 5441 -U bench -d postgres -c "CREATE DATABASE ceiling" >/dev/null
as_owner "$bin/psql" -qX -h "$root" -p 5441 -U bench -d ceiling >/dev/null <<'EOF'
CREATE TABLE sealed (id bigserial PRIMARY KEY, blob text NOT NULL);
ALTER TABLE sealed ALTER COLUMN blob SET STORAGE EXTERNAL;
EOF
# A row of 4,096 characters that differs from every other; EXTERNAL keeps TOAST from compressing it.
cat >"$root/insert.sql" <<'EOF'
\set r random(1, 2000000000)
INSERT INTO sealed (blob) VALUES (repeat(md5(:r::text), 128));
EOF
# A filing's transaction as casevaultd makes it, its statements prepared as casevaultd's are: BEGIN, the
# case's advisory lock, the case's row read with the filing lock shared and the wrap epoch, the insert of
# the sealed row checked against the epoch, COMMIT. What PostgreSQL alone allows a filing, before any HTTP,
# audit or sealing (into a table with a primary key alone: casevault_records keeps more indexes).
as_owner "$bin/psql" -qX -h "$root" -p 5441 -U bench -d ceiling >/dev/null <<'EOF'
CREATE TABLE cases (id int PRIMARY KEY, state text NOT NULL, mediators bigint[] NOT NULL);
INSERT INTO cases SELECT i, 'in_session', '{4001}' FROM generate_series(1, 1000) i;
CREATE TABLE epochs (number bigint PRIMARY KEY, ready boolean NOT NULL);
INSERT INTO epochs VALUES (1, true);
EOF
cat >"$root/filing.sql" <<'EOF'
\set r random(1, 2000000000)
\set k random(1, 1000)
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT 1 FROM pg_advisory_xact_lock(1129726785, :k);
SELECT c.state, c.mediators, (SELECT max(number) FROM epochs WHERE ready) FROM pg_advisory_xact_lock_shared(4851) AS f LEFT JOIN cases c ON c.id = :k;
INSERT INTO sealed (blob) SELECT repeat(md5(:r::text), 128) WHERE 1 = (SELECT max(number) FROM epochs WHERE ready);
COMMIT;
EOF
# The same filings eight to a transaction, each case's lock, read and insert as above and one COMMIT for the
# eight (eight cases drawn from eight separate ranges, so that no two of a transaction are one case): what
# the database would spend per filing were a daemon to commit its filings in batches, as the local store
# commits its puts, rather than one transaction each.
{
    echo '\set r random(1, 2000000000)'
    echo 'BEGIN ISOLATION LEVEL READ COMMITTED;'
    for i in 0 1 2 3 4 5 6 7; do
        echo "\\set k$i random($((i * 125 + 1)), $((i * 125 + 125)))"
        echo "SELECT 1 FROM pg_advisory_xact_lock(1129726785, :k$i);"
        echo "SELECT c.state, c.mediators, (SELECT max(number) FROM epochs WHERE ready) FROM pg_advisory_xact_lock_shared(4851) AS f LEFT JOIN cases c ON c.id = :k$i;"
        echo "INSERT INTO sealed (blob) SELECT repeat(md5((:r + $i)::text), 128) WHERE 1 = (SELECT max(number) FROM epochs WHERE ready);"
    done
    echo 'COMMIT;'
} >"$root/filings8.sql"
# The same statements in one server-side function, so that a filing is one round trip with no BEGIN or COMMIT
# of its own (autocommit): what the database would spend were casevaultd to send each filing as one call.
# Each statement of a PL/pgSQL function takes its own snapshot under READ COMMITTED, so the case is read after
# its lock is granted, as in the transaction above. casevaultd files one a call only for a filing that only
# adds its record, with an unlocked read of its own before it, never eight to a call, and its call is a
# procedure that commits inside (casevault_file_unchanged, a little dearer than this function, whose
# statement commits after it answers): this measures what the database would leave it.
as_owner "$bin/psql" -qX -v ON_ERROR_STOP=1 -h "$root" -p 5441 -U bench -d ceiling >/dev/null <<'EOF'
CREATE FUNCTION filing(k int, r int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE state text; mediators bigint[]; epoch bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1129726785, k);
    SELECT c.state, c.mediators, (SELECT max(number) FROM epochs WHERE ready) INTO state, mediators, epoch
        FROM pg_advisory_xact_lock_shared(4851) AS f LEFT JOIN cases c ON c.id = k;
    INSERT INTO sealed (blob) SELECT repeat(md5(r::text), 128) WHERE 1 = (SELECT max(number) FROM epochs WHERE ready);
    RETURN 1;
END $$;
EOF
cat >"$root/filing-call.sql" <<'EOF'
\set r random(1, 2000000000)
\set k random(1, 1000)
SELECT filing(:k, :r);
EOF
# Eight filings in one call's statement (one transaction, one COMMIT), the cases from eight separate ranges.
{
    echo '\set r random(1, 2000000000)'
    for i in 0 1 2 3 4 5 6 7; do echo "\\set k$i random($((i * 125 + 1)), $((i * 125 + 125)))"; done
    printf 'SELECT filing(:k0, :r)'
    for i in 1 2 3 4 5 6 7; do printf ', filing(:k%s, :r + %s)' "$i" "$i"; done
    echo ';'
} >"$root/filings8-call.sql"
chmod 0644 "$root/insert.sql" "$root/filing.sql" "$root/filings8.sql" "$root/filing-call.sql" "$root/filings8-call.sql"

# Where the CPU goes, without a profiler: busy clock ticks of the whole machine (user, nice, system, irq,
# softirq, steal: /proc/stat) and of given processes with all their threads (/proc/PID/stat), read before
# and after a run; per request, in microseconds.
tick_us=$((1000000 / $(getconf CLK_TCK)))
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
process_ticks() { # PID...
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] && total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}
# The database's processes now: backends, the WAL writer and sender, the standby's receiver and startup.
postgres_ticks() { process_ticks $(pgrep -x postgres || true); }
per_request() { # TICKS REQUESTS
    awk -v t="$1" -v n="$2" -v us="$tick_us" 'BEGIN { if (n > 0) printf "%.0f", t * us / n; else print 0 }'
}

run() { # NAME CLIENTS [SCRIPT [RATE [ROWS]]]: RATE transactions a second at most (pgbench -R; "" for as fast
    # as it can); ROWS rows each transaction inserts (default 1): the rate and the CPU are per row, the mean
    # latency per transaction.
    local out rate latency done busy client rows=${5:-1} TIMEFORMAT='%U %S'
    busy=$(machine_ticks)
    # pgbench's own CPU (bash's time of the child), so that the database's side is the machine's less it.
    { time as_owner "$bin/pgbench" -n -h "$root" -p 5441 -U bench -M prepared ${4:+-R "$4"} -c "$2" -j 2 -T "$seconds" \
        -f "${3:-$root/insert.sql}" ceiling >"$root/pgbench.out" 2>&1; } 2>"$root/pgbench.time"
    busy=$(($(machine_ticks) - busy))
    client=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($1 + $2) * hz }' "$root/pgbench.time")
    out=$(cat "$root/pgbench.out")
    rate=$(awk -v rows="$rows" '/^tps = / { printf "%.0f", $3 * rows }' <<<"$out")
    latency=$(awk '/^latency average = / { print $4 }' <<<"$out")
    done=$(awk -v rows="$rows" '/^number of transactions actually processed: / { print $6 * rows }' <<<"$out")
    printf '  %-50s %6s/s, mean latency %s ms; CPU each: the machine %s us, pgbench %s us\n' "$1, $2 client(s)" \
        "$rate" "$latency" "$(per_request "$busy" "${done:-0}")" "$(per_request "$client" "${done:-0}")"
    echo "$1_$2_rate $rate" >>"$figures"
    echo "$1_$2_latency_ms $latency" >>"$figures"
    echo "$1_$2_machine_cpu_us $(per_request "$busy" "${done:-0}")" >>"$figures"
    echo "$1_$2_database_cpu_us $(per_request "$((busy - client))" "${done:-0}")" >>"$figures"
}

echo "PostgreSQL ceiling: plain INSERTs of 4 KiB rows, each committed durably (pgbench, ${seconds} s each)"
run postgres_insert 16
run postgres_insert 1

# A synchronous standby streaming from the primary, on the same disk.
as_owner "$bin/pg_basebackup" -h "$root" -p 5441 -U bench -D "$root/standby" -R --checkpoint=fast \
    -d "application_name=standby1" >/dev/null
sed -i '/^port = /d;/^unix_socket_directories = /d;/^listen_addresses = /d;/^max_connections = /d' \
    "$root/standby/postgresql.conf"
start "$root/standby" 5442
as_owner "$bin/psql" -qX -h "$root" -p 5441 -U bench -d postgres \
    -c "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 100); do
    state=$(as_owner "$bin/psql" -qXAt -h "$root" -p 5441 -U bench -d postgres \
        -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
    [ "$state" = sync ] && break
    sleep 0.1
done
if [ "${state:-}" != sync ]; then
    echo "  the standby did not stream in sync: the synchronous figures are left out"
    exit 0
fi
run postgres_insert_sync 16
run postgres_insert_sync 1
echo "  a filing's transaction (BEGIN, case lock, case read with the filing lock and epoch, insert, COMMIT):"
run postgres_filing_sync 16 "$root/filing.sql"
echo "  the same filings eight to a transaction (one COMMIT for eight cases' filings), from 2 clients (16 filings under way):"
run postgres_filings8_sync 2 "$root/filings8.sql" "" 8
echo "  the filing as one call of a server-side function (one round trip), 16 clients; eight filings a call, 2 clients:"
run postgres_filing_call_sync 16 "$root/filing-call.sql"
run postgres_filings8_call_sync 2 "$root/filings8-call.sql" "" 8

# casevaultd on this database: its own directory, the standby and the primary listed, this user director.
if [ ! -x "$release/casevaultd" ] || [ ! -x "$release/casevault-load" ]; then
    echo "  no release casevaultd (swift build -c release): the vault's figures on PostgreSQL are left out"
    exit 0
fi
as_owner "$bin/psql" -qX -h "$root" -p 5441 -U bench -d postgres -c "CREATE DATABASE vault" >/dev/null
mkdir -m 0700 "$root/daemon"
cat >"$root/daemon/casevault.toml" <<CONF
[store]
data_directory = "$root/daemon/data"
root_key_file = "$root/daemon/keys/root.key"
max_content_bytes = 1048576
[server]
socket_path = "$root/daemon/run/casevault.sock"
max_body_bytes = 2097152
[storage]
backend = "postgresql"
connection = "postgresql://bench@/vault?host=$root,$root&port=5442,5441"
daemon_name = "bench"
[roles]
director = ["self"]
CONF
"$release/casevaultd" --config "$root/daemon/casevault.toml" --log-level warning >"$root/daemon.log" 2>&1 &
daemon=$!
sock="$root/daemon/run/casevault.sock"
for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://casevault/v1/health >/dev/null 2>&1 && break; sleep 0.1; done
# 200 cases, one 4 KiB intake form each to read; puts go round the cases.
filler=$(head -c 3000 /dev/urandom | base64 -w0 | head -c 4000)
printf '{"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "%s"}}' "$filler" >"$root/put.json"
: >"$root/gets.txt"
: >"$root/puts.txt"
for _ in $(seq 200); do
    case_id=$(curl -s --unix-socket "$sock" -H 'Content-Type: application/json' \
        -d '{"participants": [{"name": "a"}, {"name": "b"}]}' http://casevault/v1/cases | sed 's/.*"case_id":"\([0-9a-f]*\)".*/\1/')
    record=$(curl -s --unix-socket "$sock" -H 'Content-Type: application/json' --data-binary @"$root/put.json" \
        "http://casevault/v1/cases/$case_id/records" | sed 's/.*"record_id":"\([0-9a-f]*\)".*/\1/')
    echo "/v1/records/$record" >>"$root/gets.txt"
    echo "/v1/cases/$case_id/records" >>"$root/puts.txt"
done
load() { # NAME ARGS...
    local name=$1 line rate p50 p99 busy own servers requests
    shift
    # The database's processes before and after: a backend casevaultd opened during the run counts whole
    # (it began with none); one that ended during it is missed (casevaultd keeps its connections).
    busy=$(machine_ticks)
    own=$(process_ticks "$daemon")
    servers=$(postgres_ticks)
    line=$("$release/casevault-load" "$@")
    busy=$(($(machine_ticks) - busy))
    own=$(($(process_ticks "$daemon") - own))
    servers=$(($(postgres_ticks) - servers))
    read -r rate p50 p99 < <(sed -E 's/.* ([0-9]+) req\/s +p50 +([0-9.]+) ms +p99 +([0-9.]+) ms.*/\1 \2 \3/' <<<"$line")
    requests=$((rate * seconds))
    echo "$line"
    echo "    CPU per request: casevaultd $(per_request "$own" "$requests") us, PostgreSQL's processes" \
        "$(per_request "$servers" "$requests") us, the whole machine $(per_request "$busy" "$requests") us"
    [ "$name" = postgres_put_16 ] && put_rate=$rate
    echo "${name}_rate $rate" >>"$figures"
    echo "${name}_p50 $p50" >>"$figures"
    echo "${name}_p99 $p99" >>"$figures"
    echo "${name}_daemon_cpu_us $(per_request "$own" "$requests")" >>"$figures"
    echo "${name}_postgres_cpu_us $(per_request "$servers" "$requests")" >>"$figures"
    echo "${name}_machine_cpu_us $(per_request "$busy" "$requests")" >>"$figures"
}
echo "casevaultd on this database (primary and synchronous standby), 4 KiB records over the socket, ${seconds} s each"
for conn in 16 1; do
    load "postgres_put_$conn" --label "casevaultd durable PUT, PostgreSQL" --socket "$sock" --method POST \
        --paths-file "$root/puts.txt" --body-file "$root/put.json" --connections "$conn" --seconds "$seconds"
    load "postgres_get_$conn" --label "casevaultd GET, PostgreSQL     " --socket "$sock" \
        --paths-file "$root/gets.txt" --connections "$conn" --seconds "$seconds"
done

# The database's own cost of a filing depends on the rate: fewer commits share each flush and each wake of
# the WAL writer and the standby. So the filing transaction again, at the rate the PUTs reached: what the
# database alone spends per filing at that rate, to set against its processes' CPU per PUT above.
if [ "${put_rate:-0}" -gt 0 ]; then
    # From 8 clients: casevaultd's awaited filings hold 8 connections at most (PostgresStorage).
    echo "  a filing's transaction at the rate of the PUTs (pgbench -R $put_rate):"
    run postgres_filing_sync_at_put_rate 8 "$root/filing.sql" "$put_rate"
fi

# Where a PUT's time goes, with a profiler: the PUT load at 16 connections again under `perf record`, once
# for the whole machine by process (casevaultd, the database's processes, the load generator, idle), once
# for casevaultd's own stack (scripts/perf-summary.py), so that the profiler's cost is in no figure above.
# Skipped when perf is missing or may not profile here (root, or CAP_SYS_PTRACE for the daemon).
PERF=$(command -v perf || true)
if [ -z "$PERF" ] || [ "$(id -u)" != 0 ]; then
    echo "  where a PUT's time goes: no profile (perf is missing, or this is not root)"
    exit 0
fi
profile() { # PERF-RECORD-ARGS...
    rm -f "$root/perf.data"
    "$PERF" record -q -F 499 -g -o "$root/perf.data" "$@" -- sleep "$seconds" >/dev/null 2>&1 &
    local recorder=$!
    "$release/casevault-load" --socket "$sock" --method POST --paths-file "$root/puts.txt" \
        --body-file "$root/put.json" --connections 16 --seconds "$seconds" >/dev/null
    wait "$recorder" || true
}
profile -a
"$PERF" report -i "$root/perf.data" --no-children --sort comm --stdio -q 2>/dev/null |
    awk 'NF >= 2 && $1 ~ /%$/ && $1 + 0 >= 1 { parts = parts sep $2 " " $1; sep = "; " }
        END { print "  where the time goes on the machine, casevaultd durable PUT on PostgreSQL, 16 conn (perf, by process): " parts }'
profile -p "$daemon"
"$PERF" script -i "$root/perf.data" 2>/dev/null |
    python3 "$scripts/perf-summary.py" "casevaultd durable PUT on PostgreSQL, 16 conn" |
    sed 's/^/  /' || echo "  where a PUT's time goes: no profile (perf could not record it)"
