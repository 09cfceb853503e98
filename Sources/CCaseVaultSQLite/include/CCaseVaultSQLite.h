#ifndef CCASEVAULT_SQLITE_H
#define CCASEVAULT_SQLITE_H

/// Turns off the checkpoint SQLite runs when the last connection to a WAL database closes
/// (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE; sqlite3_db_config is variadic, which Swift cannot call). `db` is
/// the connection's `sqlite3 *`. Returns SQLite's result code (0 is SQLITE_OK).
int casevault_sqlite_no_checkpoint_on_close(void *db);

#endif
