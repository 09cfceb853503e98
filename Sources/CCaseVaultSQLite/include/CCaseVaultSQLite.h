#ifndef CCASEVAULT_SQLITE_H
#define CCASEVAULT_SQLITE_H

/// Turns off the checkpoint SQLite runs when the last connection to a WAL database closes
/// (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE; sqlite3_db_config is variadic, which Swift cannot call). `db` is
/// the connection's `sqlite3 *`. Returns SQLite's result code (0 is SQLITE_OK).
int casevault_sqlite_no_checkpoint_on_close(void *db);

/// What the writer's WAL hook is given and keeps, on the writer alone: the frames past which a commit asks
/// for a checkpoint (`frames`), whether one did since the writer last looked (`due`), and the frames in the
/// WAL after the last commit (`in_wal`).
struct casevault_checkpoint_report {
    int frames;
    int due;
    int in_wal;
};

/// Replaces SQLite's automatic checkpoint, which runs on the committing connection and drops a checkpoint's
/// failure, with a request: once a commit leaves `report->frames` frames or more in the WAL, `report->due` is
/// set for the writer to see after its commit, and a connection of the index's own runs the checkpoint off
/// the writer (`Index.Checkpoints`), keeping its failure. `db` is the connection's `sqlite3 *`; `report` must
/// outlive it.
void casevault_sqlite_checkpoint_when_due(void *db, struct casevault_checkpoint_report *report);

#endif
