#!/usr/bin/env bash
# make test-tsan: counts the ThreadSanitizer reports the test run wrote (TSAN_OPTIONS log_path) and sorts
# them: those whose two racing accesses are both inside a closure given to Synchronization.Mutex.withLock
# (its mangled name carries `zYuYT`: an `inout sending` value in, a `sending` result out), which TSan
# cannot see locked on Linux (the Mutex locks through a futex system call in the uninstrumented
# libswiftSynchronization.so), reports a kill cut short with the one access they show inside such a
# closure, and the others, each printed with its first frames. Exits 1 if there is any of the others.
#
#   scripts/tsan-summary.sh DIR      (DIR: where the reports are, one file per process)
set -euo pipefail
dir="${1:?usage: scripts/tsan-summary.sh DIR}"
shopt -s nullglob
files=("$dir"/*)
if ((${#files[@]} == 0)); then
    echo "tsan: no reports"
    exit 0
fi
python3 - "${files[@]}" <<'PY'
import re
import sys

reports = []
for path in sys.argv[1:]:
    text = open(path, errors="replace").read()
    for block in text.split("==================")[1:]:
        if "WARNING: ThreadSanitizer" in block:
            reports.append(block)
inside, cut, others = 0, 0, []
for block in reports:
    # The first frame of each access: "#0 <symbol> <file:line>".
    tops = re.findall(r"^\s+#0 (\S+)", block, flags=re.M)[:2]
    if len(tops) == 2 and all("zYuYT" in top for top in tops):
        inside += 1
    elif len(tops) < 2 and all("zYuYT" in top for top in tops):
        # A process killed while it wrote the report (the tests kill daemons with SIGKILL).
        cut += 1
    else:
        others.append(block)
print(f"tsan: {len(reports)} reports; {inside} with both accesses inside Mutex.withLock closures, {cut} cut short "
      f"inside one by a kill; {len(others)} others")
for block in others:
    lines = [line for line in block.splitlines() if line.strip()][:12]
    print("\n".join(lines))
    print("--")
sys.exit(1 if others else 0)
PY
