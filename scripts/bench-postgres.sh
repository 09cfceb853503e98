#!/usr/bin/env bash
# make bench, issue 19: the PostgreSQL ceiling on this machine, what a vault on PostgreSQL is to be measured
# against. A throw-away PostgreSQL 15 cluster on Unix sockets in a temporary directory (as `nobody` under
# root, since PostgreSQL refuses root), then pgbench: plain INSERTs of 4 KiB rows (TOAST without compression,
# as sealed bytes are), each its own durable commit (fsync and synchronous_commit on, the defaults), from 16
# clients and from 1; then the same with a synchronous streaming standby on the same disk (what a failover
# that loses no acknowledged write needs). Appends `name value` lines to $CASEVAULT_BENCH_FIGURES, prints;
# asserts nothing.
#   scripts/bench-postgres.sh [SECONDS]
set -euo pipefail
seconds=${1:-5}
bin=/usr/lib/postgresql/15/bin
figures=${CASEVAULT_BENCH_FIGURES:-/dev/null}
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
chmod 0644 "$root/insert.sql"

run() { # NAME CLIENTS
    local out rate latency
    out=$(as_owner "$bin/pgbench" -n -h "$root" -p 5441 -U bench -M prepared -c "$2" -j 2 -T "$seconds" \
        -f "$root/insert.sql" ceiling 2>&1)
    rate=$(awk '/^tps = / { printf "%.0f", $3 }' <<<"$out")
    latency=$(awk '/^latency average = / { print $4 }' <<<"$out")
    printf '  %-58s %8s/s, mean latency %s ms\n' "$1, $2 client(s)" "$rate" "$latency"
    echo "$1_$2_rate $rate" >>"$figures"
    echo "$1_$2_latency_ms $latency" >>"$figures"
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
