#include "CCaseVaultSQLite.h"

#include <stddef.h>
#include <sqlite3.h>

int casevault_sqlite_no_checkpoint_on_close(void *db) {
    int set = 0;
    int rc = sqlite3_db_config((sqlite3 *)db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &set);
    if (rc == SQLITE_OK && set != 1) return SQLITE_ERROR;
    return rc;
}

// SQLite's own hook (sqlite3WalDefaultHook) checkpoints on the committing connection, the index's only
// writer, and drops the checkpoint's result: a failed flush of the WAL there is reported by Linux to that
// flush alone, and a later one succeeds over frames that never reached the disk.
static int casevault_checkpoint_hook(void *argument, sqlite3 *db, const char *name, int frames) {
    (void)db;
    (void)name;
    struct casevault_checkpoint_report *report = argument;
    report->in_wal = frames;
    if (frames >= report->frames) report->due = 1;
    return SQLITE_OK;
}

void casevault_sqlite_checkpoint_when_due(void *db, struct casevault_checkpoint_report *report) {
    sqlite3_wal_hook((sqlite3 *)db, casevault_checkpoint_hook, report);
}
