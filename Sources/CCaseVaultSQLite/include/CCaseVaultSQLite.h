#ifndef CCASEVAULT_SQLITE_H
#define CCASEVAULT_SQLITE_H

/// Turns off the checkpoint SQLite runs when the last connection to a WAL database closes
/// (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE; sqlite3_db_config is variadic, which Swift cannot call). `db` is
/// the connection's `sqlite3 *`. Returns SQLite's result code (0 is SQLITE_OK).
int casevault_sqlite_no_checkpoint_on_close(void *db);

/// What the writer's WAL hook is given and keeps: the frames past which a commit checkpoints (`frames`), the
/// result code of the first checkpoint that failed since the caller last took it (`failure`, written and
/// read on the writer only), and the time spent in checkpoints (`nanoseconds`, read with
/// `casevault_checkpoint_nanoseconds` from any thread).
struct casevault_checkpoint_report {
    int frames;
    int failure;
    long long nanoseconds;
};

/// Replaces SQLite's automatic checkpoint, which drops a checkpoint's failure, with one that keeps it: once
/// a commit leaves `report->frames` frames or more in the WAL, a passive checkpoint runs, and its result
/// code, when it failed (a failed flush of the WAL among them), is stored in `report->failure` for the
/// caller to take after the commit. The commit itself is not failed: it was complete before the checkpoint
/// began. `db` is the connection's `sqlite3 *`; `report` must outlive it.
void casevault_sqlite_checkpoint_reporting_failures(void *db, struct casevault_checkpoint_report *report);

/// The time the hook has spent in checkpoints so far, in nanoseconds (an atomic read).
long long casevault_checkpoint_nanoseconds(const struct casevault_checkpoint_report *report);

#endif
