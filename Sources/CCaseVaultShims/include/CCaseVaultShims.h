#ifndef CCASEVAULT_SHIMS_H
#define CCASEVAULT_SHIMS_H

#endif

/// Keeps keys out of core files: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (prctl is variadic, which Swift
/// cannot call). Returns 0 on success, -1 with errno set.
int casevault_disable_core_dumps(void);
