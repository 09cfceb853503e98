#ifndef CCASEVAULT_SQLITE_H
#define CCASEVAULT_SQLITE_H

int casevault_sqlite_no_checkpoint_on_close(void *db);

/// What the writer's WAL hook is told and tells: the frames past which it checkpoints, the result code of
/// the first checkpoint that failed since the writer last took it, and the time spent checkpointing.
struct casevault_checkpoint_report {
    int frames;
    int failure;
    long long nanoseconds;
};

void casevault_sqlite_checkpoint_reporting_failures(void *db, struct casevault_checkpoint_report *report);

/// The time the hook has spent checkpointing so far, read from any thread.
long long casevault_checkpoint_nanoseconds(const struct casevault_checkpoint_report *report);

#endif
