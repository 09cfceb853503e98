#include "CCaseVaultSQLite.h"

#include <stddef.h>
#include <sqlite3.h>
#include <time.h>

int casevault_sqlite_no_checkpoint_on_close(void *db) {
    int set = 0;
    int rc = sqlite3_db_config((sqlite3 *)db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &set);
    if (rc == SQLITE_OK && set != 1) return SQLITE_ERROR;
    return rc;
}

static long long casevault_monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

// SQLite's own hook (sqlite3WalDefaultHook) drops the checkpoint's result: a failed flush of the WAL there
// is reported by Linux to that flush alone, and a later one succeeds over frames that never reached the disk.
static int casevault_checkpoint_hook(void *argument, sqlite3 *db, const char *name, int frames) {
    struct casevault_checkpoint_report *report = argument;
    if (frames < report->frames) return SQLITE_OK;
    long long start = casevault_monotonic_nanoseconds();
    int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && report->failure == SQLITE_OK) report->failure = rc;
    __atomic_fetch_add(&report->nanoseconds, casevault_monotonic_nanoseconds() - start, __ATOMIC_RELAXED);
    return SQLITE_OK;
}

void casevault_sqlite_checkpoint_reporting_failures(void *db, struct casevault_checkpoint_report *report) {
    sqlite3_wal_hook((sqlite3 *)db, casevault_checkpoint_hook, report);
}

long long casevault_checkpoint_nanoseconds(const struct casevault_checkpoint_report *report) {
    return __atomic_load_n(&report->nanoseconds, __ATOMIC_RELAXED);
}
