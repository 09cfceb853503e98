#ifndef CCASEVAULT_SHIMS_H
#define CCASEVAULT_SHIMS_H

#endif

/// Keeps keys out of core files: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (prctl is variadic, which Swift
/// cannot call). Returns 0 on success, -1 with errno set.
int casevault_disable_core_dumps(void);

#include <stdint.h>

/// The layout of Linux's `struct ucred` (SO_PEERCRED), which Glibc declares only under _GNU_SOURCE.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} casevault_ucred;

/// A buffer for SO_PEERGROUPS: the peer's supplementary groups, sorted ascending by the kernel.
typedef struct {
    uint32_t groups[256];
} casevault_peer_groups;

/// sd_notify(3) without libsystemd: sends `message` as one datagram to NOTIFY_SOCKET's `socket_path`
/// (a path, or `@name` in the abstract namespace). Returns 0 on success, -1 with errno set.
int casevault_sd_notify(const char *socket_path, const char *message);

/// The inode's attribute flags (FS_IOC_GETFLAGS; ioctl is variadic). Returns 0, or -1 with errno set.
int casevault_inode_flags(int fd, int *flags);

/// Marks a file no-copy-on-write (FS_NOCOW_FL), so that btrfs overwrites its blocks in place. Effective
/// only while the file is empty; fails with ENOTTY or EOPNOTSUPP on filesystems without the flag.
int casevault_set_nocow(int fd);

/// Forbids this process and what it execs from ever mapping memory writable and executable
/// (PR_SET_MDWE, as MemoryDenyWriteExecute= does), and reads the flag back. For tests. Returns 0 when the
/// flag is in force, or -1 with errno set.
int casevault_refuse_exec_gain(void);

/// The magic number of the filesystem `path` is on (statfs's f_type). Returns 0, or -1 with errno set.
int casevault_filesystem_type(const char *path, unsigned long *type);

/// sync_file_range over the whole file of `fd` (which Glibc declares only under _GNU_SOURCE), one step of
/// writing its dirty pages back: `step` 0 starts writing every dirty page not already being written
/// (SYNC_FILE_RANGE_WRITE); 1 first waits for the writes under way, then starts every dirty page that no
/// one has begun to write meanwhile (WAIT_BEFORE | WRITE); 2 waits for the writes under way, starting
/// none (WAIT_AFTER). No metadata and no device cache flush. The waits report a failed write (once to
/// each open file). Returns 0, or -1 with errno set.
int casevault_write_back(int fd, int step);

/// Opens a file without a name in `directory` (O_TMPFILE, read and write, close-on-exec) with `mode`: its
/// bytes are freed however the process ends, until `casevault_link_unnamed` gives it a name. Returns the
/// descriptor, or -1 with errno set (EOPNOTSUPP or EISDIR where the filesystem or kernel has no O_TMPFILE).
int casevault_open_unnamed(const char *directory, int mode);

/// Gives the unnamed file open at `fd` the name `path` (linkat through /proc/self/fd, which needs no
/// privilege); fails with EEXIST when `path` exists. Returns 0, or -1 with errno set.
int casevault_link_unnamed(int fd, const char *path);

/// Adds to `actions` (a posix_spawn_file_actions_t, untyped so that this header includes no system header)
/// what Glibc declares only under _GNU_SOURCE: change to `directory`, then close every descriptor from 3 up,
/// so that a spawned program (and any server it leaves running) inherits nothing but its standard streams.
/// Returns 0, or an error number.
int casevault_spawn_actions_confine(void *actions, const char *directory);

/// FS_NOCOW_FL, for reading the flags back.
#define CASEVAULT_FS_NOCOW_FL 0x00800000

#define CASEVAULT_SO_PEERCRED 17
#define CASEVAULT_SO_PEERGROUPS 59
