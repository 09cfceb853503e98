#define _GNU_SOURCE
#include <unistd.h>
#include "CCaseVaultShims.h"

int casevault_syncfs(int fd) {
    return syncfs(fd);
}
