// powercutfs: a FUSE filesystem for the power-cut tests. It passes everything through to a real
// directory (BACKING) and remembers what has not been made durable, and when it is unmounted it throws
// exactly that away, as a power cut would (after Jepsen's lazyfs, which does the same for file data):
//
// - file data: before a write (or a truncate, an fallocate, an open with O_TRUNC) changes a 4 KiB block
//   that existed at the last fsync or fdatasync of the file, the block's old bytes are kept, with the
//   file's size at that sync; a sync of the file forgets them. At unmount the old bytes are written back
//   and the file cut to its old size.
// - names: a create, mkdir, link, symlink, unlink, rmdir or rename is kept in a log until the directory it
//   changed (both, for a rename across directories) is fsynced; a removed or replaced file is kept as a
//   hard link in STASH meanwhile. At unmount the log is undone, newest first.
//
// With --keep=P (0 to 1) and --seed=N, the disk wrote some of what it was given and not the rest: each
// file keeps its new size with probability P (else its old one), each lost block below the size it ends
// with is kept with probability P, each block it grew by is left zeroed with probability 1 - P (the size
// reached the disk, the data did not), and the name log keeps a random prefix of its changes (a journal
// commits in order), undoing only the rest.
//
// A failing disk: --fail=OP:PATH@N=ERR makes the Nth call (from 1) of OP on PATH fail with ERR (EIO or
// ENOSPC; ERR+ fails that call and every later one), without doing it. OP is write, truncate, fsync,
// fdatasync, fsyncdir or rename (PATH is then the source); PATH is relative to the mount, with every run
// of digits written as # (`fsync:/data/segments/#@3=EIO`), and may hold fnmatch(3) wildcards, each file
// that matches counting its own calls (`write:/data/backup-*.sqlite@5=EIO`). A failed fsync or fdatasync loses what it
// should have made durable, as Linux does after a writeback error (the "fsyncgate" lesson): the pages
// stay readable but are marked clean, so a later fsync succeeds without writing them; here the blocks
// changed before the failure are thrown away at the cut unless written again and synced since. Each
// injected failure prints "injected OP:PATH #N ERR". With --fail-while=FILE (a path outside the mount),
// the failure is injected only while FILE exists, so that a test can make the disk fail and recover at the
// moments it chooses (`--fail=write:/disk.img@1=EIO+`: every write while it exists); calls are counted all
// the same. --census=FILE writes, at unmount, one line per site reached: "COUNT OP:PATH".
//
// Usage: powercutfs BACKING STASH MOUNTPOINT [--keep=P] [--seed=N] [--fail=SITE@N=ERR] [--fail-while=FILE]
//        [--census=FILE]
// Runs in the foreground, single-threaded; `fusermount3 -u MOUNTPOINT` is the power cut. It prints
// "ready" once mounted is requested and, at unmount, one line: "cut: B blocks, F sizes, N names undone,
// E errors" (E must be 0: a rollback that failed leaves the simulation short of a power cut).
// Build: cc -O2 -Wall -o powercutfs powercutfs.c $(pkg-config --cflags --libs fuse3)

#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <ftw.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#define BLOCK 4096

static char backing[PATH_MAX];
static char stash[PATH_MAX - 32];
static double keep = 0;
static unsigned long stashed = 0;
static unsigned long errors = 0;

// ---- file data ------------------------------------------------------------------------------------

struct tracked {
    dev_t dev;
    ino_t ino;
    int fd;                 // our own descriptor, so that the file can be rolled back after a rename or unlink
    off_t durable_size;     // the size at the last sync
    unsigned char **blocks; // old bytes of blocks below durable_size, by block number; NULL: unchanged
    size_t count;
    unsigned char *rewritten; // after a failed sync: blocks written since (kept blocks are lost until then)
};

static struct tracked *files = NULL;
static size_t nfiles = 0;

static void full_path(char *out, const char *path) {
    snprintf(out, PATH_MAX, "%s%s", backing, path);
}

// The record of the file open as `fd` (in the backing directory), made on its first change since a sync.
static struct tracked *track(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    for (size_t i = 0; i < nfiles; i++) {
        if (files[i].dev == st.st_dev && files[i].ino == st.st_ino) return &files[i];
    }
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int own = open(self, O_RDWR | O_CLOEXEC);
    if (own < 0) return NULL; // the caller fails the operation: it could not be rolled back
    files = realloc(files, (nfiles + 1) * sizeof *files);
    struct tracked *t = &files[nfiles++];
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->fd = own;
    t->durable_size = st.st_size;
    t->count = (size_t)((st.st_size + BLOCK - 1) / BLOCK);
    t->blocks = calloc(t->count ? t->count : 1, sizeof *t->blocks);
    t->rewritten = NULL;
    return t;
}

// Keeps the old bytes of every block in [start, end) that existed at the last sync; -1 when the file
// cannot be tracked (the operation must then fail).
static int preserve(int fd, off_t start, off_t end) {
    struct tracked *t = track(fd);
    if (!t) return -1;
    if (start >= t->durable_size) return 0;
    if (end > t->durable_size) end = t->durable_size;
    for (size_t b = (size_t)(start / BLOCK); (off_t)b * BLOCK < end && b < t->count; b++) {
        if (t->rewritten) t->rewritten[b] = 1;
        if (t->blocks[b]) continue;
        t->blocks[b] = calloc(1, BLOCK);
        if (pread(fd, t->blocks[b], BLOCK, (off_t)b * BLOCK) < 0) {
            // Read through our own descriptor if the caller's is write-only.
            if (pread(t->fd, t->blocks[b], BLOCK, (off_t)b * BLOCK) < 0) return -1;
        }
    }
    return 0;
}

// A successful sync: the file's changes are durable, except those a failed sync lost and nothing wrote
// again since.
static void forget_file(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    for (size_t i = 0; i < nfiles; i++) {
        struct tracked *t = &files[i];
        if (t->dev != st.st_dev || t->ino != st.st_ino) continue;
        size_t lost = 0;
        for (size_t b = 0; b < t->count; b++) {
            if (t->blocks[b] && t->rewritten && !t->rewritten[b]) { lost++; continue; }
            free(t->blocks[b]);
            t->blocks[b] = NULL;
        }
        if (lost == 0) {
            free(t->blocks);
            free(t->rewritten);
            close(t->fd);
            files[i] = files[--nfiles];
            return;
        }
        // The lost blocks stay; the rest of the file, its new size among it, is durable now.
        size_t count = (size_t)((st.st_size + BLOCK - 1) / BLOCK);
        if (count > t->count) {
            t->blocks = realloc(t->blocks, count * sizeof *t->blocks);
            t->rewritten = realloc(t->rewritten, count);
            for (size_t b = t->count; b < count; b++) t->blocks[b] = NULL;
            t->count = count;
        }
        memset(t->rewritten, 0, t->count);
        if (st.st_size > t->durable_size) t->durable_size = st.st_size;
        return;
    }
}

// A failed sync: what it should have made durable is lost until written again (see the top).
static void lose_file(int fd) {
    struct tracked *t = track(fd);
    if (!t) { errors++; return; }
    if (!t->rewritten) t->rewritten = calloc(t->count ? t->count : 1, 1);
    else memset(t->rewritten, 0, t->count);
}

// ---- a failing disk -------------------------------------------------------------------------------

static char fail_site[PATH_MAX];
static unsigned long fail_at = 0;
static int fail_errno = 0;
static int fail_sticky = 0;
static const char *census_path = NULL;
static const char *fail_while = NULL;

struct site { char name[PATH_MAX]; unsigned long count; };
static struct site *sites = NULL;
static size_t nsites = 0;

// Counts a call of `op` on `path` (relative to the mount) at its site; returns the errno to fail it
// with, or 0 to do it.
static int reach(const char *op, const char *path) {
    char name[PATH_MAX];
    size_t n = (size_t)snprintf(name, sizeof name, "%s:", op);
    for (const char *c = path; *c && n + 2 < sizeof name; c++) {
        if (*c >= '0' && *c <= '9') {
            if (n == 0 || name[n - 1] != '#') name[n++] = '#';
        } else {
            name[n++] = *c;
        }
    }
    name[n] = 0;
    struct site *s = NULL;
    for (size_t i = 0; i < nsites && !s; i++) {
        if (!strcmp(sites[i].name, name)) s = &sites[i];
    }
    if (!s) {
        sites = realloc(sites, (nsites + 1) * sizeof *sites);
        s = &sites[nsites++];
        snprintf(s->name, sizeof s->name, "%s", name);
        s->count = 0;
    }
    s->count++;
    if (!fail_at || fnmatch(fail_site, name, 0) != 0) return 0;
    if (s->count != fail_at && !(fail_sticky && s->count > fail_at)) return 0;
    if (fail_while && access(fail_while, F_OK) != 0) return 0;
    printf("injected %s #%lu %s\n", name, s->count, fail_errno == ENOSPC ? "ENOSPC" : "EIO");
    fflush(stdout);
    return fail_errno;
}

static void write_census(void) {
    if (!census_path) return;
    FILE *f = fopen(census_path, "w");
    if (!f) { errors++; return; }
    for (size_t i = 0; i < nsites; i++) fprintf(f, "%lu %s\n", sites[i].count, sites[i].name);
    fclose(f);
}

// ---- names ----------------------------------------------------------------------------------------

enum kind { CREATE, MKDIR, UNLINK, RMDIR, RENAME, LINK };

struct op {
    enum kind kind;
    char from[PATH_MAX]; // backing paths
    char to[PATH_MAX];
    char saved[PATH_MAX]; // a stash link for what was removed or replaced; empty when none
    char dir_from[PATH_MAX];
    char dir_to[PATH_MAX];
    int synced_from, synced_to;
};

static struct op *ops = NULL;
static size_t nops = 0;

static void parent_of(char *out, const char *path) {
    snprintf(out, PATH_MAX, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == out) slash[1] = 0; else if (slash) *slash = 0;
}

static struct op *log_op(enum kind kind, const char *from, const char *to) {
    ops = realloc(ops, (nops + 1) * sizeof *ops);
    struct op *o = &ops[nops++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    snprintf(o->from, PATH_MAX, "%s", from);
    snprintf(o->to, PATH_MAX, "%s", to ? to : "");
    parent_of(o->dir_from, from);
    parent_of(o->dir_to, to ? to : from);
    return o;
}

// Keeps `path` (a file about to be removed or replaced) as a hard link in the stash; 0 when kept.
static int save(const char *path, char *saved) {
    snprintf(saved, PATH_MAX, "%s/%d.%lu", stash, (int)getpid(), stashed++);
    if (link(path, saved) != 0) {
        saved[0] = 0;
        return -1;
    }
    return 0;
}

static void drop_op(size_t i) {
    if (ops[i].saved[0]) unlink(ops[i].saved);
    memmove(&ops[i], &ops[i + 1], (nops - i - 1) * sizeof *ops);
    nops--;
}

static void sync_dir(const char *dir) {
    for (size_t i = 0; i < nops;) {
        if (strcmp(ops[i].dir_from, dir) == 0) ops[i].synced_from = 1;
        if (strcmp(ops[i].dir_to, dir) == 0) ops[i].synced_to = 1;
        if (ops[i].synced_from && ops[i].synced_to) drop_op(i); else i++;
    }
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[PATH_MAX];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(child); else unlink(child);
        }
        closedir(d);
    }
    rmdir(path);
}

// ---- the power cut --------------------------------------------------------------------------------

static double chance(void) { return (double)random() / ((double)RAND_MAX + 1); }

static void cut(void) {
    unsigned long blocks = 0, sizes = 0, names = 0;
    static const unsigned char zeros[BLOCK];
    for (size_t i = 0; i < nfiles; i++) {
        struct tracked *t = &files[i];
        struct stat st;
        if (fstat(t->fd, &st) != 0) { errors++; continue; }
        // The size first: the blocks that matter are those below it.
        off_t target = t->durable_size;
        if (keep > 0 && st.st_size != t->durable_size && chance() < keep) target = st.st_size;
        if (target != st.st_size) sizes++;
        for (size_t b = 0; b < t->count; b++) {
            if (!t->blocks[b]) continue;
            off_t at = (off_t)b * BLOCK;
            if (at >= target) continue;
            size_t length = (size_t)((t->durable_size - at) < BLOCK ? (t->durable_size - at) : BLOCK);
            // A block a truncate took away and nothing wrote again has no new content a disk could have
            // kept: the truncate not reaching the disk leaves the old bytes. Only rewritten blocks are a
            // coin toss.
            int rewritten = at + (off_t)length <= st.st_size;
            // A block a failed sync lost is not on the disk, whatever the disk kept of the rest.
            int lost = t->rewritten && !t->rewritten[b];
            if (rewritten && !lost && keep > 0 && chance() < keep) continue;
            if (pwrite(t->fd, t->blocks[b], length, at) < 0) errors++;
            blocks++;
        }
        // Grown and kept: each new block reached the disk or not.
        for (off_t at = (t->durable_size + BLOCK - 1) / BLOCK * BLOCK; keep > 0 && at < target; at += BLOCK) {
            if (chance() < keep) continue;
            size_t length = (size_t)((target - at) < BLOCK ? (target - at) : BLOCK);
            if (pwrite(t->fd, zeros, length, at) < 0) errors++;
            blocks++;
        }
        if (ftruncate(t->fd, target) != 0) errors++;
        fsync(t->fd);
    }
    // The name log: with --keep, a prefix of it reached the disk, in order.
    size_t kept = keep > 0 ? (size_t)(chance() * (double)(nops + 1)) : 0;
    if (kept > nops) kept = nops;
    for (size_t n = 0; n < kept; n++) {
        if (ops[n].saved[0]) unlink(ops[n].saved);
    }
    for (size_t n = nops; n-- > kept;) {
        struct op *o = &ops[n];
        int result = 0;
        switch (o->kind) {
        case CREATE:
        case LINK: result = unlink(o->from); break;
        case MKDIR: remove_tree(o->from); break;
        case UNLINK: if (o->saved[0]) result = rename(o->saved, o->from); break;
        case RMDIR: result = mkdir(o->from, 0700); break;
        case RENAME:
            result = rename(o->to, o->from);
            if (result == 0 && o->saved[0]) result = rename(o->saved, o->to);
            break;
        }
        if (result != 0) {
            fprintf(stderr, "powercutfs: undoing a change to %s: %s\n", o->from, strerror(errno));
            errors++;
        }
        o->saved[0] = 0;
        names++;
    }
    // The backing directory's filesystem only: a sync of every filesystem would also write back the dirty
    // pages of tests running beside this one (a failing disk's among them, whose writes then fail at a
    // moment that test did not choose).
    int root = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0 || syncfs(root) != 0) errors++;
    if (root >= 0) close(root);
    printf("cut: %lu blocks, %lu sizes, %lu names undone, %lu errors\n", blocks, sizes, names, errors);
    fflush(stdout);
}

// ---- the operations -------------------------------------------------------------------------------

static int fail(void) { return -errno; }

static void *pc_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->use_ino = 1;
    cfg->direct_io = 0;
    cfg->kernel_cache = 0;
    cfg->attr_timeout = 0;
    cfg->entry_timeout = 0;
    cfg->negative_timeout = 0;
    return NULL;
}

static int pc_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    if (fi) return fstat((int)fi->fh, st) == 0 ? 0 : fail();
    char p[PATH_MAX];
    full_path(p, path);
    return lstat(p, st) == 0 ? 0 : fail();
}

static int pc_readlink(const char *path, char *buf, size_t size) {
    char p[PATH_MAX];
    full_path(p, path);
    ssize_t n = readlink(p, buf, size - 1);
    if (n < 0) return fail();
    buf[n] = 0;
    return 0;
}

static int pc_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)off; (void)fi; (void)flags;
    char p[PATH_MAX];
    full_path(p, path);
    DIR *d = opendir(p);
    if (!d) return fail();
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st = {0};
        st.st_ino = e->d_ino;
        st.st_mode = (mode_t)e->d_type << 12;
        if (filler(buf, e->d_name, &st, 0, 0)) break;
    }
    closedir(d);
    return 0;
}

static int pc_mkdir(const char *path, mode_t mode) {
    char p[PATH_MAX];
    full_path(p, path);
    if (mkdir(p, mode) != 0) return fail();
    log_op(MKDIR, p, NULL);
    return 0;
}

static int pc_unlink(const char *path) {
    char p[PATH_MAX];
    full_path(p, path);
    struct op probe;
    if (save(p, probe.saved) != 0) return fail();
    if (unlink(p) != 0) {
        int error = errno;
        unlink(probe.saved);
        return -error;
    }
    struct op *o = log_op(UNLINK, p, NULL);
    snprintf(o->saved, PATH_MAX, "%s", probe.saved);
    return 0;
}

static int pc_rmdir(const char *path) {
    char p[PATH_MAX];
    full_path(p, path);
    if (rmdir(p) != 0) return fail();
    log_op(RMDIR, p, NULL);
    return 0;
}

static int pc_symlink(const char *target, const char *path) {
    char p[PATH_MAX];
    full_path(p, path);
    if (symlink(target, p) != 0) return fail();
    log_op(CREATE, p, NULL);
    return 0;
}

static int pc_rename(const char *from, const char *to, unsigned int flags) {
    if (flags) return -EINVAL;
    int injected = reach("rename", from);
    if (injected) return -injected;
    char f[PATH_MAX], t[PATH_MAX], saved[PATH_MAX] = "";
    full_path(f, from);
    full_path(t, to);
    struct stat st;
    if (lstat(t, &st) == 0 && !S_ISDIR(st.st_mode) && save(t, saved) != 0) return fail();
    if (rename(f, t) != 0) {
        int error = errno;
        if (saved[0]) unlink(saved);
        return -error;
    }
    struct op *o = log_op(RENAME, f, t);
    snprintf(o->saved, PATH_MAX, "%s", saved);
    return 0;
}

static int pc_link(const char *from, const char *to) {
    char f[PATH_MAX], t[PATH_MAX];
    full_path(f, from);
    full_path(t, to);
    if (link(f, t) != 0) return fail();
    log_op(LINK, t, NULL);
    return 0;
}

static int pc_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    if (fi) return fchmod((int)fi->fh, mode) == 0 ? 0 : fail();
    char p[PATH_MAX];
    full_path(p, path);
    return chmod(p, mode) == 0 ? 0 : fail();
}

static int pc_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    if (fi) return fchown((int)fi->fh, uid, gid) == 0 ? 0 : fail();
    char p[PATH_MAX];
    full_path(p, path);
    return lchown(p, uid, gid) == 0 ? 0 : fail();
}

static int pc_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    int injected = reach("truncate", path);
    if (injected) return -injected;
    int fd = fi ? (int)fi->fh : -1;
    int own = -1;
    if (fd < 0) {
        char p[PATH_MAX];
        full_path(p, path);
        own = fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd < 0) return fail();
    }
    struct stat st;
    fstat(fd, &st);
    int tracked = size < st.st_size ? preserve(fd, size, st.st_size) : (track(fd) ? 0 : -1);
    int result = tracked != 0 ? -EIO : ftruncate(fd, size) == 0 ? 0 : fail();
    if (own >= 0) close(own);
    return result;
}

static int pc_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    if (fi) return futimens((int)fi->fh, tv) == 0 ? 0 : fail();
    char p[PATH_MAX];
    full_path(p, path);
    return utimensat(AT_FDCWD, p, tv, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : fail();
}

static int pc_open(const char *path, struct fuse_file_info *fi) {
    char p[PATH_MAX];
    full_path(p, path);
    int flags = fi->flags & ~O_TRUNC;
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    int fd = open(p, flags | O_CLOEXEC);
    if (fd < 0) return fail();
    if (fi->flags & O_TRUNC) {
        struct stat st;
        fstat(fd, &st);
        if (preserve(fd, 0, st.st_size) != 0 || ftruncate(fd, 0) != 0) {
            int error = errno;
            close(fd);
            return -error;
        }
    }
    fi->fh = (uint64_t)fd;
    return 0;
}

static int pc_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    char p[PATH_MAX];
    full_path(p, path);
    struct stat st;
    int existed = lstat(p, &st) == 0;
    int flags = fi->flags & ~O_TRUNC;
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    int fd = open(p, flags | O_CREAT | O_CLOEXEC, mode);
    if (fd < 0) return fail();
    int tracked = 0;
    if (!existed) {
        log_op(CREATE, p, NULL);
        tracked = track(fd) ? 0 : -1; // new: nothing of it is durable, its size was 0
    } else if (fi->flags & O_TRUNC) {
        fstat(fd, &st);
        tracked = preserve(fd, 0, st.st_size) == 0 && ftruncate(fd, 0) == 0 ? 0 : -1;
    }
    if (tracked != 0) {
        close(fd);
        return -EIO;
    }
    fi->fh = (uint64_t)fd;
    return 0;
}

static int pc_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? fail() : (int)n;
}

static int pc_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    int injected = reach("write", path);
    if (injected) return -injected;
    int fd = (int)fi->fh;
    if (preserve(fd, off, off + (off_t)size) != 0) return -EIO;
    ssize_t n = pwrite(fd, buf, size, off);
    return n < 0 ? fail() : (int)n;
}

static int pc_statfs(const char *path, struct statvfs *st) {
    (void)path;
    return statvfs(backing, st) == 0 ? 0 : fail();
}

static int pc_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int pc_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    int fd = (int)fi->fh;
    int injected = reach(datasync ? "fdatasync" : "fsync", path);
    if (injected) {
        lose_file(fd);
        return -injected;
    }
    if ((datasync ? fdatasync(fd) : fsync(fd)) != 0) return fail();
    forget_file(fd);
    return 0;
}

static int pc_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)datasync; (void)fi;
    int injected = reach("fsyncdir", path);
    if (injected) return -injected;
    char p[PATH_MAX];
    full_path(p, path);
    // The root is "BACKING/"; directories are logged without the trailing slash.
    size_t length = strlen(p);
    if (length > 1 && p[length - 1] == '/') p[length - 1] = 0;
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fail();
    int result = fsync(fd) == 0 ? 0 : fail();
    close(fd);
    if (result == 0) sync_dir(p);
    return result;
}

static int pc_fallocate(const char *path, int mode, off_t off, off_t length, struct fuse_file_info *fi) {
    (void)path;
    int fd = (int)fi->fh;
    // Plain allocation changes no byte; any other mode (punch, zero, collapse, insert) may change every
    // block from `off` on.
    int tracked = (mode & ~FALLOC_FL_KEEP_SIZE) == 0 ? (track(fd) ? 0 : -1) : preserve(fd, off, INT64_MAX);
    if (tracked != 0) return -EIO;
    return fallocate(fd, mode, off, length) == 0 ? 0 : fail();
}

static off_t pc_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi) {
    (void)path;
    off_t result = lseek((int)fi->fh, off, whence);
    return result < 0 ? fail() : result;
}

static const struct fuse_operations operations = {
    .init = pc_init,
    .getattr = pc_getattr,
    .readlink = pc_readlink,
    .readdir = pc_readdir,
    .mkdir = pc_mkdir,
    .unlink = pc_unlink,
    .rmdir = pc_rmdir,
    .symlink = pc_symlink,
    .rename = pc_rename,
    .link = pc_link,
    .chmod = pc_chmod,
    .chown = pc_chown,
    .truncate = pc_truncate,
    .utimens = pc_utimens,
    .open = pc_open,
    .create = pc_create,
    .read = pc_read,
    .write = pc_write,
    .statfs = pc_statfs,
    .release = pc_release,
    .fsync = pc_fsync,
    .fsyncdir = pc_fsyncdir,
    .fallocate = pc_fallocate,
    .lseek = pc_lseek,
};

// libfuse keeps a file that is unlinked or renamed over while open under a hidden name (`.fuse_hidden…`)
// until it is closed. A cut can roll back that last unlink and leave the name in BACKING, where no real
// filesystem would have kept it (the file had no name any more), and where a later mount, choosing the same
// hidden names, would find them taken and fail the rename with EBUSY. So every mount starts without them.
static int drop_hidden(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    if (type == FTW_F && !strncmp(path + ftw->base, ".fuse_hidden", 12)) unlink(path);
    return 0;
}

int main(int argc, char *argv[]) {
    if (argc < 4) {
        fprintf(stderr, "usage: powercutfs BACKING STASH MOUNTPOINT [--keep=P] [--seed=N] [--fail=SITE@N=ERR] [--census=FILE]\n");
        return 64;
    }
    char resolved[PATH_MAX];
    if (!realpath(argv[1], backing) || !realpath(argv[2], resolved) || strlen(resolved) >= sizeof stash) {
        perror("powercutfs: backing or stash directory");
        return 66;
    }
    memcpy(stash, resolved, strlen(resolved) + 1);
    unsigned seed = 1;
    for (int i = 4; i < argc; i++) {
        if (!strncmp(argv[i], "--keep=", 7)) keep = atof(argv[i] + 7);
        else if (!strncmp(argv[i], "--seed=", 7)) seed = (unsigned)strtoul(argv[i] + 7, NULL, 10);
        else if (!strncmp(argv[i], "--census=", 9)) census_path = argv[i] + 9;
        else if (!strncmp(argv[i], "--fail-while=", 13)) fail_while = argv[i] + 13;
        else if (!strncmp(argv[i], "--fail=", 7)) {
            // SITE@N=ERR: the site may hold '@' or '=' itself, so split at the last of each.
            snprintf(fail_site, sizeof fail_site, "%s", argv[i] + 7);
            char *at = strrchr(fail_site, '@');
            char *eq = at ? strchr(at, '=') : NULL;
            if (!at || !eq) { fprintf(stderr, "powercutfs: --fail=OP:PATH@N=ERR\n"); return 64; }
            *at = 0;
            *eq = 0;
            fail_at = strtoul(at + 1, NULL, 10);
            fail_sticky = eq[strlen(eq + 1)] == '+';
            if (!strncmp(eq + 1, "EIO", 3)) fail_errno = EIO;
            else if (!strncmp(eq + 1, "ENOSPC", 6)) fail_errno = ENOSPC;
            if (!fail_at || !fail_errno) { fprintf(stderr, "powercutfs: --fail: N from 1, ERR EIO or ENOSPC\n"); return 64; }
        }
        else { fprintf(stderr, "powercutfs: unknown option %s\n", argv[i]); return 64; }
    }
    srandom(seed);
    umask(0);
    nftw(backing, drop_hidden, 16, FTW_PHYS);
    char *fuse_argv[] = {argv[0], argv[3], "-f", "-s", "-o", "default_permissions,allow_other,fsname=powercutfs", NULL};
    printf("ready\n");
    fflush(stdout);
    int status = fuse_main(6, fuse_argv, &operations, NULL);
    write_census();
    cut();
    return status;
}
