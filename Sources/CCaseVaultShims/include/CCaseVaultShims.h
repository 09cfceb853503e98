#ifndef CCASEVAULT_SHIMS_H
#define CCASEVAULT_SHIMS_H

/// Flushes every dirty page of the filesystem holding `fd`: one flush for a whole batch of writes
/// (group commit). Glibc declares syncfs only under _GNU_SOURCE, which Swift's Glibc module does not set.
int casevault_syncfs(int fd);

#endif

#ifndef CCASEVAULT_SHIMS_PROCESS
#define CCASEVAULT_SHIMS_PROCESS
/// Keeps keys out of core files: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (prctl is variadic, which Swift
/// cannot call). Returns 0 on success, -1 with errno set.
int casevault_disable_core_dumps(void);
#endif
