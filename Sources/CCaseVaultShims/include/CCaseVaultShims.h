#ifndef CCASEVAULT_SHIMS_H
#define CCASEVAULT_SHIMS_H

/// Flushes every dirty page of the filesystem holding `fd`: one flush for a whole batch of writes
/// (group commit). Glibc declares syncfs only under _GNU_SOURCE, which Swift's Glibc module does not set.
int casevault_syncfs(int fd);

#endif
