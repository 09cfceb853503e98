#include "CCaseVaultSQLite.h"

#include <sqlite3.h>

int casevault_sqlite_no_checkpoint_on_close(void *db) {
    int set = 0;
    int rc = sqlite3_db_config((sqlite3 *)db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &set);
    if (rc == SQLITE_OK && set != 1) return SQLITE_ERROR;
    return rc;
}
