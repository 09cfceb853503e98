#!/usr/bin/env bash
# CaseVault's units under a real systemd, as a new operator installs them and as its clients use them.
#
# Boots systemd as PID 1 in a throw-away container whose root is this host's own filesystem under a
# tmpfs overlay (nothing written inside reaches the host), installs the build with `make install`, runs
# systemd-sysusers and systemd-tmpfiles, creates the people, enables casevault.socket and the sweep timer,
# and checks through the real socket what the clients' group and the operator rely on: socket activation,
# READY=1 and STATUS=, the watchdog, a whole mediation case with any forbidden system call fatal, rotate,
# backup, the sweep service, audit verify, a clean stop and restart, the daemon without socket
# activation, and a configuration naming a missing group.
#
#   Tests/system/real-systemd.sh [BUILT]     BUILT: the build folder to install (default .build/debug)
#
# Needs root with CAP_SYS_ADMIN, systemd-nspawn (systemd-container), curl, and a host whose PID 1 is
# not systemd (a host systemd would own the cgroups). Without them it says so and skips (exit 0).
# It ends with one line "real-systemd: N passed, M failed" and exits 1 if anything failed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
built=${1:-.build/debug}
name=casevault-test-$$
socket=/run/casevault/casevault.sock
config=/etc/casevault/casevault.toml
watchdog=6            # seconds: the test's drop-in shortens WatchdogSec=30s so that a hang shows sooner

skip() {
    echo "real-systemd: SKIPPED: $*" >&2
    echo "real-systemd: SKIPPED: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "not root; the container needs root with CAP_SYS_ADMIN"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is missing (apt-get install --no-install-recommends systemd-container)"
command -v curl >/dev/null || skip "curl is missing"
[ "$(cat /proc/1/comm)" != systemd ] || skip "this host's PID 1 is systemd; boot the container with machinectl instead"
unshare --mount --propagation private true 2>/dev/null || skip "cannot make a mount namespace (no CAP_SYS_ADMIN)"
for binary in casevaultd casevaultctl casevault-manual; do
    [ -x "$repo/$built/$binary" ] || { echo "real-systemd: $repo/$built/$binary is missing; build first" >&2; exit 1; }
done

work=$(mktemp -d /tmp/casevault-systemd.XXXXXX)
view=$work/root                     # the mount point of the root view; the container's / is an overlay on it
mkdir -p "$view"
nspawn_state_before=$( [ -e /run/systemd/nspawn ] && echo present || echo absent )
# The cgroups nspawn makes beside itself (--keep-unit in the root cgroup) when there is no host systemd;
# only those that this run made are removed.
cgroups_before=$(for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    for c in payload supervisor; do [ -d "$h/$c" ] && echo "$h/$c"; done; done; true)
ours() { ! grep -qxF "$1" <<< "$cgroups_before"; }

# The container's PID 1 (a child of systemd-nspawn), and commands in all of its namespaces.
leader() { pgrep -P "$(cat "$work/nspawn.pid")" -x systemd; }
box() { nsenter --target "$(leader)" --all --wdns=/ -- "$@"; }
as() { local user=$1; shift; box runuser -u "$user" -- "$@"; }

# What nspawn leaves on a host whose PID 1 is not systemd: the cgroups it splits its own into
# (--keep-unit in the root cgroup) and /run/systemd/nspawn (this host's /run is not a tmpfs).
leftovers() {
    local h c
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        for c in payload supervisor; do [ -d "$h/$c" ] && ours "$h/$c" && echo "$h/$c"; done
    done
    if [ "$nspawn_state_before" = absent ] && [ -e /run/systemd/nspawn ]; then echo /run/systemd/nspawn; fi
    return 0
}

shutdown_box() {
    local pid
    if pid=$(cat "$work/nspawn.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
        kill -s RTMIN+3 "$(leader)" 2>/dev/null || true     # systemd's "poweroff"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    local h c
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        for c in payload supervisor; do
            if [ -d "$h/$c" ] && ours "$h/$c"; then find "$h/$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
        done
    done
    if [ "$nspawn_state_before" = absent ]; then rm -rf /run/systemd/nspawn; else rm -rf "/run/systemd/nspawn/unix-export/$name"; fi
    rm -f "$work/nspawn.pid"
}

finish() {
    local status=$?
    shutdown_box
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT

passed=0
failed=0
# check WHAT COMMAND...: one assertion; on failure the command's output is shown.
check() {
    local what=$1 output
    shift
    if output=$("$@" 2>&1); then
        passed=$((passed + 1))
        echo "ok    $what"
    else
        failed=$((failed + 1))
        echo "FAIL  $what"
        [ -n "$output" ] && printf '%s\n' "$output" | sed 's/^/      /'
    fi
    return 0
}
# equals EXPECTED COMMAND...: the command's output is EXPECTED.
equals() {
    local expected=$1 actual
    shift
    actual=$("$@" 2>&1) || true
    [ "$actual" = "$expected" ] || { echo "wanted '$expected', got '$actual'"; return 1; }
}
# A setup step: its failure ends the test, with the container's journal.
step() {
    echo "--    $*"
    if ! "$@"; then
        echo "FAIL  setup: $*"
        box journalctl --no-pager -n 60 2>/dev/null | sed 's/^/      /' || true
        failed=$((failed + 1))
        echo "real-systemd: $passed passed, $failed failed"
        exit 1
    fi
}

# status USER METHOD PATH: the HTTP status of one request over the socket; when curl fails, also its exit
# code ("000 exit 7": could not connect, as for a permission denied; "000 exit 28": no answer in time).
status() {
    local code=0 out
    out=$(as "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 20 --unix-socket "$socket" -X "$2" "http://casevault$3") || code=$?
    if [ "$code" = 0 ]; then echo "$out"; else echo "$out exit $code"; fi
}
show() { box systemctl show -p "$2" --value "$1"; }
state_of() { echo "$(show "$1" ActiveState)/$(show "$1" SubState)"; }
ended() { echo "$(show "$1" Result) $(show "$1" ExecMainStatus)"; }
# The journal (of one unit), read whole before it is searched: a failing journalctl fails the check.
journal() { box journalctl --no-pager -o cat ${1:+-u "$1"}; }
journal_has() { local text; text=$(journal "${2:-}") || return 2; grep -q -i -e "$1" <<< "$text"; }
journal_lacks() { local text; text=$(journal "${2:-}") || return 2; ! grep -i -e "$1" <<< "$text"; }
no_bad_system_call() { journal_lacks 'status=31/SYS\|code=killed, status=31'; }
starts_naming() { local text; text=$(journal casevault.service) || return 2; [ "$(grep -c -e "$1" <<< "$text")" = "$2" ]; }
configuration_untouched() {
    [ "$(box stat -c %a /etc/casevault)" = 755 ] && journal_lacks ConfigurationDirectory
}
pinged_since() { [ "$(show casevault.service WatchdogTimestampMonotonic)" -gt "$1" ]; }
sh_echo() { echo "$*"; }
at_most() { [ "$(echo "$1 <= $2" | bc)" = 1 ]; }
# wait_for SECONDS COMMAND...: until the command succeeds, at most SECONDS.
wait_for() {
    local deadline=$(( $(date +%s) + $1 ))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# --- Boot -----------------------------------------------------------------------------------------------
# A private mount namespace and a NON-recursive bind of /: nspawn refuses '-D /' with --volatile=overlay and
# a root whose /dev is populated. --register=no --keep-unit: no host systemd or machined to ask.
# --private-network: its own network namespace. The repository is bound in read-only, wherever it lives.
echo "--    booting systemd in a container ($name)"
t0=$(date +%s.%N)
setsid unshare --mount --propagation private -- sh -c '
    mount --bind / "$1" &&
    exec systemd-nspawn --directory="$1" --volatile=overlay --boot --register=no --keep-unit \
        --private-network --machine="$2" --console=read-only --bind-ro="$3":/mnt/casevault \
        -- systemd.mask=postgresql.service' \
    sh "$view" "$name" "$repo" > "$work/nspawn.log" 2>&1 < /dev/null &
echo $! > "$work/nspawn.pid"
booted=no
for _ in $(seq 1 600); do
    if leader >/dev/null 2>&1; then
        state=$(timeout 20 nsenter --target "$(leader)" --all --wdns=/ -- systemctl is-system-running --wait 2>/dev/null) || true
        case $state in running|degraded) booted=yes; break;; esac
    fi
    kill -0 "$(cat "$work/nspawn.pid")" 2>/dev/null || break
    sleep 0.1
done
if [ "$booted" != yes ]; then
    cat "$work/nspawn.log" >&2
    echo "real-systemd: the container did not boot; 0 passed, 1 failed"
    exit 1
fi
printf -- '--    booted in %.2f s: %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$(box systemctl --version | head -1)"

# --- Install as docs/OPERATIONS.md's "On a real host" says ---------------------------------------------
# The container's root is this host's: whatever an earlier install left on it is cleared first (in the
# overlay only), so that the run starts from a fresh host.
step box sh -c 'rm -rf /etc/casevault /var/lib/casevault /var/lib/casevault-keys /run/casevault /etc/systemd/system/casevault* \
    /usr/local/lib/systemd/system/casevault* /usr/local/lib/sysusers.d/casevault.conf /usr/local/lib/tmpfiles.d/casevault.conf
    for u in dana olivia nadia oscar; do userdel -f "$u" 2>/dev/null || true; done'
step box make --no-print-directory -s -C /mnt/casevault install BUILT="$built"
step box systemd-sysusers
step box systemd-tmpfiles --create
# The people: a director who also mediates, an operator, someone with a role but not in the clients'
# group, and someone with nothing.
step box useradd --no-create-home --groups casevault-clients,casevault-directors,casevault-mediators dana
step box useradd --no-create-home --groups casevault-clients,casevault-operators olivia
step box useradd --no-create-home --groups casevault-directors nadia
step box useradd --no-create-home oscar
# Any system call outside the filter kills the service (and the sweep) instead of failing with EPERM, and
# the watchdog is shortened.
step box mkdir -p /etc/systemd/system/casevault.service.d /etc/systemd/system/casevault-sweep.service.d
step box sh -c "printf '[Service]\nSystemCallErrorNumber=kill\nWatchdogSec=${watchdog}s\n' > /etc/systemd/system/casevault.service.d/50-test.conf"
step box sh -c "printf '[Service]\nSystemCallErrorNumber=kill\n' > /etc/systemd/system/casevault-sweep.service.d/50-test.conf"
step box systemctl daemon-reload
step box systemctl enable --now casevault.socket casevault-sweep.timer

# --- Socket activation and the clients' group -----------------------------------------------------------
check "tmpfiles made /run/casevault casevault:casevault-clients 2750" equals "casevault:casevault-clients 2750" box stat -c '%U:%G %a' /run/casevault
check "the socket is casevault:casevault-clients 0660 before the service starts" equals "casevault:casevault-clients 660" box stat -c '%U:%G %a' "$socket"
check "the service waits for its first client" equals inactive box systemctl is-active casevault.service
check "a client's first request starts the service and is answered" equals 200 status dana GET /v1/health
check "the service is running (Type=notify: READY=1 arrived)" equals active/running state_of casevault.service
check "STATUS= names the socket" equals "serving on $socket" show casevault.service StatusText
check "a second request of the client group, after the start" equals 200 status dana GET /v1/whoami
check "and a third, on a new connection" equals 200 status dana GET /v1/health
check "the start left /run/casevault to the clients' group" equals "casevault:casevault-clients 2750" box stat -c '%U:%G %a' /run/casevault
check "the start left the socket to the clients' group" equals "casevault:casevault-clients 660" box stat -c '%U:%G %a' "$socket"
check "someone outside the clients' group cannot connect" equals "000 exit 7" status oscar GET /v1/health
check "nor can a director outside the clients' group" equals "000 exit 7" status nadia GET /v1/health
check "/etc/casevault is left as installed (0755), no ConfigurationDirectory warning" configuration_untouched
check "the watchdog is armed at ${watchdog} s" equals "${watchdog}s" show casevault.service WatchdogUSec
first_ping=$(show casevault.service WatchdogTimestampMonotonic)
sleep "$watchdog"
check "the daemon pings the watchdog" pinged_since "$first_ping"

# --- A whole mediation case, with any forbidden system call fatal ---------------------------------------
main_pid=$(show casevault.service MainPID)
walkthrough() { as dana /mnt/casevault/examples/walkthrough.sh "$socket" > "$work/walkthrough.log" 2>&1 || { cat "$work/walkthrough.log"; return 1; }; }
check "the walkthrough: a whole case as the director-mediator, over the real socket" walkthrough
case_id=$(sed -n 's/^walkthrough complete: case \([0-9a-f]*\)$/\1/p' "$work/walkthrough.log")
check "the walkthrough named its case" test -n "$case_id"
check "the operator rotates the keys" as olivia casevaultctl rotate --config "$config"
check "the operator takes a backup while it serves" as olivia sh -c "casevaultctl backup --config $config --out /tmp/vault.backup && test -s /tmp/vault.backup"
check "casevault-sweep.service runs the sweep as the daemon's user" box systemctl start casevault-sweep.service
check "the sweep ended in success (0, or 2: nothing due)" equals success show casevault-sweep.service Result
check "the operator verifies the audit log" as olivia casevaultctl audit verify --config "$config"
check "the director reads the case back" equals 200 status dana GET "/v1/cases/$case_id"
key_files() { echo $(box stat -c '%U %a' /var/lib/casevault-keys/root.key /var/lib/casevault-keys/backup.keys); }
check "the keys live apart from the data, in /var/lib/casevault-keys" equals "casevault 600 casevault 600" key_files
check "no restart so far" equals 0 show casevault.service NRestarts
check "the same daemon served it all" equals "$main_pid" show casevault.service MainPID
check "no system call was refused (no status=31/SYS)" no_bad_system_call

# --- The watchdog: a stopped daemon is restarted within its period and a few seconds --------------------
box kill -STOP "$main_pid"
t0=$(date +%s.%N)
restarted() {
    local pid
    pid=$(show casevault.service MainPID)
    [ "$pid" != 0 ] && [ "$pid" != "$main_pid" ] && [ "$(box systemctl is-active casevault.service)" = active ]
}
if wait_for $(( watchdog + 20 )) restarted; then
    elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
    check "restarted $(printf '%.1f' "$elapsed") s after SIGSTOP: within ${watchdog} s + 5 s" at_most "$elapsed" $(( watchdog + 5 ))
else
    check "restarted within ${watchdog} s + 20 s after SIGSTOP" false
fi
check "the journal says the watchdog fired" journal_has "watchdog timeout" casevault.service
check "the restarted daemon answers the client group" equals 200 status dana GET "/v1/cases/$case_id"

# --- A clean stop, and a restart on the existing data ---------------------------------------------------
step box systemctl stop casevault.service
check "a clean stop exits 0" equals "success 0" ended casevault.service
check "the socket stays for the clients while the service is stopped" equals active box systemctl is-active casevault.socket
check "a client's request starts it again on the existing data" equals 200 status dana GET "/v1/cases/$case_id"
check "the audit log still verifies after the restart" as olivia casevaultctl audit verify --config "$config"
check "still no system call refused" no_bad_system_call

# --- Without socket activation: the daemon binds its own socket under the same filter -------------------
# casevault.service always has its socket (Requires=casevault.socket). This copy runs casevaultd without it,
# to show that the daemon's own bind needs no chown (the directory is set-group-ID) under the same filter;
# it adds ReadWritePaths=/run/casevault, which a daemon binding its own socket under ProtectSystem=strict needs.
step box systemctl stop casevault.service casevault.socket
step box sh -c "sed -e '/casevault.socket/d' /usr/local/lib/systemd/system/casevault.service > /etc/systemd/system/casevault-unactivated.service"
step box mkdir -p /etc/systemd/system/casevault-unactivated.service.d
step box sh -c "printf '[Service]\nSystemCallErrorNumber=kill\nReadWritePaths=/run/casevault\nTimeoutStartSec=20s\n' > /etc/systemd/system/casevault-unactivated.service.d/50-test.conf"
step box systemctl daemon-reload
check "without casevault.socket the daemon starts and says READY=1" box systemctl start casevault-unactivated.service
check "its own socket is casevault:casevault-clients 0660" equals "casevault:casevault-clients 660" box stat -c '%U:%G %a' "$socket"
check "the clients' group reaches it" equals 200 status dana GET "/v1/cases/$case_id"
check "others do not" equals "000 exit 7" status oscar GET /v1/health
step box systemctl stop casevault-unactivated.service
check "it stops cleanly" equals "success 0" ended casevault-unactivated.service
check "no system call refused without socket activation either" no_bad_system_call

# --- A configuration naming a group the host does not have ----------------------------------------------
step box sed -i 's/"group:casevault-statisticians"/"group:casevault-no-such-group"/' "$config"
step box systemctl start casevault.socket
check "a client's request that starts it is answered 503, not left waiting" equals 503 status dana GET /v1/health
sleep 3
check "the service fails once with exit 2, and is not restarted" equals "failed 2 0" \
    sh_echo "$(show casevault.service ActiveState)" "$(show casevault.service ExecMainStatus)" "$(show casevault.service NRestarts)"
check "its message names the missing group and how to create it" journal_has 'casevault-no-such-group.*groupadd' casevault.service
check "the daemon was started once, not again and again by the socket" starts_naming casevault-no-such-group 1
check "the socket unit is not worn out by a restart loop" equals active box systemctl is-active casevault.socket

# --- Leave nothing behind -------------------------------------------------------------------------------
shutdown_box
check "the container left no cgroups and no /run/systemd/nspawn on the host" equals "" leftovers

echo "real-systemd: $passed passed, $failed failed"
[ "$failed" = 0 ]
