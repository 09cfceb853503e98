// sync_file_range is declared only under _GNU_SOURCE, which must come before the first include.
#define _GNU_SOURCE
#include "CCaseVaultShims.h"

#include <sys/prctl.h>
#include <sys/resource.h>

int casevault_disable_core_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        return -1;
    }
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/un.h>
#include <unistd.h>

int casevault_sd_notify(const char *socket_path, const char *message) {
    size_t path_length = strlen(socket_path);
    struct sockaddr_un address;
    if (path_length == 0 || path_length >= sizeof(address.sun_path)) {
        errno = EINVAL;
        return -1;
    }
    if (socket_path[0] != '/' && socket_path[0] != '@') {
        errno = EAFNOSUPPORT;
        return -1;
    }
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, socket_path, path_length);
    if (address.sun_path[0] == '@') {
        address.sun_path[0] = '\0'; /* the abstract namespace */
    }
    socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_length);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    ssize_t sent = sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&address, length);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent < 0 ? -1 : 0;
}

#include <linux/fs.h>
#include <sys/ioctl.h>

int casevault_inode_flags(int fd, int *flags) {
    return ioctl(fd, FS_IOC_GETFLAGS, flags);
}

int casevault_set_nocow(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) {
        return -1;
    }
    if (flags & FS_NOCOW_FL) {
        return 0;
    }
    flags |= FS_NOCOW_FL;
    return ioctl(fd, FS_IOC_SETFLAGS, &flags);
}

#include <sys/vfs.h>

int casevault_filesystem_type(const char *path, unsigned long *type) {
    struct statfs info;
    if (statfs(path, &info) != 0) {
        return -1;
    }
    *type = (unsigned long)info.f_type;
    return 0;
}

/* PR_SET_MDWE (Linux 6.3): what systemd's MemoryDenyWriteExecute= asks of a process. */
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif

int casevault_refuse_exec_gain(void) {
    if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0) {
        return -1;
    }
    /* Read it back: the caller relies on the flag being in force, not on the call having returned. */
    int flags = prctl(PR_GET_MDWE, 0, 0, 0, 0);
    if (flags < 0 || !(flags & PR_MDWE_REFUSE_EXEC_GAIN)) {
        errno = ENOSYS;
        return -1;
    }
    return 0;
}

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int casevault_open_unnamed(const char *directory, int mode) {
    return open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
}

int casevault_link_unnamed(int fd, const char *path) {
    char source[64];
    snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, source, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
}

int casevault_write_back(int fd, int step) {
    unsigned int flags;
    switch (step) {
    case 0: flags = SYNC_FILE_RANGE_WRITE; break;
    case 1: flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE; break;
    case 2: flags = SYNC_FILE_RANGE_WAIT_AFTER; break;
    default: errno = EINVAL; return -1;
    }
    return sync_file_range(fd, 0, 0, flags);
}

int casevault_spawn_actions_confine(void *actions, const char *directory) {
    int failed = posix_spawn_file_actions_addchdir_np(actions, directory);
    return failed ? failed : posix_spawn_file_actions_addclosefrom_np(actions, 3);
}
