#!/usr/bin/env python3
"""Where a server's CPU went, from `perf script` output with call chains (perf record -g), in one line.

    perf script -i perf.data | scripts/perf-summary.py LABEL

Each sample counts once, for the part of the stack that best says what it was doing:
- in the kernel, by what the call chain passes through: the Unix socket (reading and writing requests),
  files and flushes (the audit log, segments, key slots, the index's WAL, and the disk under them),
  waiting and waking (futexes, epoll, the scheduler), or interrupts (no system call on the stack);
- in user space, by the library of the innermost frame, and, for frames of the server's own binary, by
  the module the Swift symbol's mangled name carries (CaseVault, NIO, Hummingbird, GRDB).
Prints: `where the time goes, LABEL (perf, N samples): part P%; ... | the Swift runtime and libc on behalf
of: part P%, ...` (the second list splits the runtime's and libc's samples by the first frame further out
that is neither), largest first. Asserts nothing.
"""
import collections
import sys

label = sys.argv[1] if len(sys.argv) > 1 else "profile"

KERNEL_PARTS = [
    # (part, substrings of any frame in the kernel part of the chain), first match wins
    ("kernel: Unix socket", ("unix_stream", "sock_", "skb", "unix_write_space", "sock_def_readable")),
    ("kernel: files and flushes", ("ext4_", "xfs_", "fdatasync", "do_fsync", "blk_", "virtio", "filemap_",
                                   "sync_file_range", "iomap_", "folio_", "jbd2")),
    ("kernel: waiting and waking", ("futex", "epoll", "schedule", "finish_task_switch", "try_to_wake_up",
                                    "eventfd", "timerfd", "hrtimer", "nanosleep")),
]
MODULES = [
    ("CaseVault", ("CaseVault",)),
    ("NIO and Hummingbird", ("Hummingbird", "NIO", "HTTPTypes", "c_nio_", "8Dispatch")),
    ("GRDB", ("GRDB",)),
]
LIBRARIES = [
    ("Swift runtime", ("libswiftCore",)),
    ("Swift concurrency", ("libswift_Concurrency",)),
    ("Foundation", ("libFoundation", "libswiftDispatch", "libdispatch")),
    ("SQLite", ("libsqlite3",)),
    ("libsodium", ("libsodium",)),
    ("libc", ("libc.so", "ld-linux", "libpthread", "[vdso]")),
]


def part_of(frames):
    """frames: [(symbol, dso)], innermost first."""
    if not frames:
        return "unknown"
    symbol, dso = frames[0]
    if dso == "[kernel.kallsyms]" or dso.startswith("[kernel"):
        kernel = [s for s, d in frames if d.startswith("[kernel")]
        syscall = any(s.startswith(("__x64_sys_", "__do_sys_", "do_syscall_64")) for s in kernel)
        for part, needles in KERNEL_PARTS:
            if any(n in s for s in kernel for n in needles):
                return part
        return "kernel: other system calls" if syscall else "kernel: interrupts"
    for part, needles in LIBRARIES:
        if any(n in dso for n in needles):
            return part
    for part, needles in MODULES:
        if any(n in symbol for n in needles):
            return part
    return "other"


def samples(stream):
    frames = []
    in_sample = False
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if in_sample:
                yield frames
            frames, in_sample = [], False
            continue
        if not line.startswith(("\t", " ")):
            in_sample = True  # the sample's header: comm, pid, time, event
            continue
        # "\t    addr symbol+off (dso)"
        body = line.strip().split(None, 1)
        if len(body) < 2:
            continue
        rest = body[1]
        dso = rest[rest.rfind("(") + 1:-1] if rest.endswith(")") else ""
        symbol = rest[: rest.rfind(" (")] if " (" in rest else rest
        frames.append((symbol, dso.rsplit("/", 1)[-1] if not dso.startswith("[") else dso))
    if in_sample:
        yield frames


SHARED = ("Swift runtime", "libc")


def caller_of(frames):
    """For a sample in the Swift runtime or libc (retains, releases, allocation, copies): the part of the
    first frame further out that is neither, so that their cost is also seen by who asked for it."""
    for index in range(1, len(frames)):
        part = part_of(frames[index:])
        if part not in SHARED and part != "Swift concurrency":
            return part
    return "unknown"


def percentages(counter, total):
    return ", ".join(f"{part} {100 * n / total:.0f}%" for part, n in counter.most_common() if 100 * n / total >= 1)


counts = collections.Counter()
callers = collections.Counter()
for frames in samples(sys.stdin):
    part = part_of(frames)
    counts[part] += 1
    if part in SHARED:
        callers[caller_of(frames)] += 1
total = sum(counts.values())
if total == 0:
    print(f"where the time goes, {label}: perf recorded no samples")
    sys.exit(0)
line = f"where the time goes, {label} (perf, {total} samples): " + percentages(counts, total).replace(", ", "; ")
if callers:
    line += f" | the Swift runtime and libc on behalf of: {percentages(callers, sum(callers.values()))}"
print(line)
