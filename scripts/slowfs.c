/*
 * The server of scripts/slowfs.py: a FUSE passthrough of one folder that sleeps a configured
 * latency before each fsync, lock call and metadata operation, and counts them.
 *
 *   slowfs-server FOLDER MOUNTPOINT STATS_FILE METADATA_MS FSYNC_MS LOCK_MS
 *
 * Written in C so that the server's own CPU stays small beside the processes it serves: on a
 * two-core machine a server in Python spent 3-5 ms of CPU per task of four hogs (each request
 * ~300 us), as much as the hogs themselves, where a real file server's CPU is on another machine.
 * Each request runs in its own thread (libfuse's multithreaded loop), so the sleeps overlap as
 * round trips to a file server do. The counts go to STATS_FILE as JSON, with the server's pid,
 * every half second and at unmount (slowfs.py stats reads them).
 *
 * Locks are real: flock is taken on the file description this open made, and POSIX locks become
 * open-file-description locks on one description per (file, lock owner), the kernel naming one
 * owner per process, so processes exclude each other exactly as on a local disk.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

enum kind { METADATA, FSYNC, LOCK, KINDS };
static const char *const kind_names[KINDS] = {"metadata", "fsync", "lock"};

/* The names slowfs.py and the benchmarks read back. */
#define OPERATIONS(X)                                                                              \
    X(STAT, "stat") X(ACCESS, "access") X(READDIR, "readdir") X(CHMOD, "chmod")                    \
    X(CHOWN, "chown") X(UTIMENS, "utimens") X(MKDIR, "mkdir") X(RMDIR, "rmdir")                    \
    X(UNLINK, "unlink") X(RENAME, "rename") X(SYMLINK, "symlink") X(LINK, "link")                  \
    X(MKNOD, "mknod") X(OPEN, "open") X(CREATE, "create") X(FSYNC_FILE, "fsync_file")              \
    X(FSYNCDIR, "fsyncdir") X(FLOCK, "flock") X(FLOCK_UNLOCK, "flock_unlock") X(FCNTL, "fcntl")
#define AS_ENUM(name, text) OP_##name,
#define AS_NAME(name, text) text,
enum operation { OPERATIONS(AS_ENUM) OPERATION_COUNT };
static const char *const operation_names[OPERATION_COUNT] = {OPERATIONS(AS_NAME)};

static int root_fd = -1;
static const char *stats_file;
static double latency_ms[KINDS];
static _Atomic unsigned long operation_counts[OPERATION_COUNT];
static _Atomic unsigned long kind_counts[KINDS];
static _Atomic unsigned long long slept_ns[KINDS];
static atomic_bool stopping;
static pthread_t dumper;
static int dumping; /* the dump thread started */

/* One round trip to the file server. */
static void pay(enum kind kind, enum operation operation) {
    long long delay_ns = (long long)(latency_ms[kind] * 1e6);
    atomic_fetch_add(&operation_counts[operation], 1);
    atomic_fetch_add(&kind_counts[kind], 1);
    atomic_fetch_add(&slept_ns[kind], (unsigned long long)delay_ns);
    if (delay_ns <= 0) return;
    struct timespec left = {delay_ns / 1000000000LL, delay_ns % 1000000000LL};
    while (nanosleep(&left, &left) == -1 && errno == EINTR) {
    }
}

/* FUSE paths start with '/': relative to the folder's descriptor. */
static const char *relative(const char *path) { return path[1] ? path + 1 : "."; }

static int result(int status) { return status == -1 ? -errno : 0; }

static void dump_stats(void) {
    char temporary[4096];
    if (snprintf(temporary, sizeof temporary, "%s.tmp", stats_file) >= (int)sizeof temporary) return;
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *out = fd == -1 ? NULL : fdopen(fd, "w");
    if (!out) {
        if (fd != -1) close(fd);
        return;
    }
    fprintf(out, "{\"pid\": %ld, \"latency\": {\"metadata_ms\": %.17g, \"fsync_ms\": %.17g, \"lock_ms\": %.17g}",
            (long)getpid(), latency_ms[METADATA], latency_ms[FSYNC], latency_ms[LOCK]);
    fputs(", \"counts\": {", out);
    const char *comma = "";
    for (int i = 0; i < OPERATION_COUNT; i++) {
        unsigned long count = atomic_load(&operation_counts[i]);
        if (count) fprintf(out, "%s\"%s\": %lu", comma, operation_names[i], count), comma = ", ";
    }
    fputs("}, \"kinds\": {", out);
    comma = "";
    for (int i = 0; i < KINDS; i++) {
        unsigned long count = atomic_load(&kind_counts[i]);
        if (count) fprintf(out, "%s\"%s\": %lu", comma, kind_names[i], count), comma = ", ";
    }
    fputs("}, \"slept_s\": {", out);
    comma = "";
    for (int i = 0; i < KINDS; i++) {
        if (atomic_load(&kind_counts[i]))
            fprintf(out, "%s\"%s\": %.9f", comma, kind_names[i], atomic_load(&slept_ns[i]) / 1e9), comma = ", ";
    }
    fputs("}}\n", out);
    if (fclose(out) == 0) rename(temporary, stats_file);
}

static void *dump_loop(void *unused) {
    (void)unused;
    struct timespec half_second = {0, 500000000L};
    while (!atomic_load(&stopping)) {
        nanosleep(&half_second, NULL);
        dump_stats();
    }
    return NULL;
}

static void *fs_init(struct fuse_conn_info *connection, struct fuse_config *config) {
    (void)connection;
    /* A signal to a client waiting for a lock interrupts its wait, as on a local disk: the queue
       bounds its waits for the lock with an alarm. */
    config->intr = 1;
    dumping = pthread_create(&dumper, NULL, dump_loop, NULL) == 0;
    return NULL;
}

static void fs_destroy(void *private_data) {
    (void)private_data;
    atomic_store(&stopping, 1);
    if (dumping) pthread_join(dumper, NULL);
    dump_stats();
}

/* -- metadata ------------------------------------------------------------------------------ */

static int fs_getattr(const char *path, struct stat *info, struct fuse_file_info *file) {
    pay(METADATA, OP_STAT);
    if (file) return result(fstat((int)file->fh, info));
    return result(fstatat(root_fd, relative(path), info, AT_SYMLINK_NOFOLLOW));
}

static int fs_access(const char *path, int mode) {
    pay(METADATA, OP_ACCESS);
    return result(faccessat(root_fd, relative(path), mode, 0));
}

static int fs_readdir(const char *path, void *buffer, fuse_fill_dir_t fill, off_t offset,
                      struct fuse_file_info *file, enum fuse_readdir_flags flags) {
    (void)offset, (void)file, (void)flags;
    pay(METADATA, OP_READDIR);
    int fd = openat(root_fd, relative(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) return -errno;
    DIR *folder = fdopendir(fd);
    if (!folder) {
        int error = errno;
        close(fd);
        return -error;
    }
    struct dirent *entry;
    while ((entry = readdir(folder)) != NULL)
        if (fill(buffer, entry->d_name, NULL, 0, 0)) break;
    closedir(folder);
    return 0;
}

static int fs_readlink(const char *path, char *target, size_t size) {
    ssize_t length = readlinkat(root_fd, relative(path), target, size - 1);
    if (length == -1) return -errno;
    target[length] = '\0';
    return 0;
}

static int fs_statfs(const char *path, struct statvfs *info) {
    (void)path;
    return result(fstatvfs(root_fd, info));
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *file) {
    pay(METADATA, OP_CHMOD);
    if (file) return result(fchmod((int)file->fh, mode));
    return result(fchmodat(root_fd, relative(path), mode, 0));
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *file) {
    pay(METADATA, OP_CHOWN);
    if (file) return result(fchown((int)file->fh, uid, gid));
    return result(fchownat(root_fd, relative(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

static int fs_utimens(const char *path, const struct timespec times[2], struct fuse_file_info *file) {
    pay(METADATA, OP_UTIMENS);
    if (file) return result(futimens((int)file->fh, times));
    return result(utimensat(root_fd, relative(path), times, AT_SYMLINK_NOFOLLOW));
}

static int fs_mkdir(const char *path, mode_t mode) {
    pay(METADATA, OP_MKDIR);
    return result(mkdirat(root_fd, relative(path), mode));
}

static int fs_rmdir(const char *path) {
    pay(METADATA, OP_RMDIR);
    return result(unlinkat(root_fd, relative(path), AT_REMOVEDIR));
}

static int fs_unlink(const char *path) {
    pay(METADATA, OP_UNLINK);
    return result(unlinkat(root_fd, relative(path), 0));
}

static int fs_rename(const char *old_path, const char *new_path, unsigned int flags) {
    pay(METADATA, OP_RENAME);
    return result(renameat2(root_fd, relative(old_path), root_fd, relative(new_path), flags));
}

static int fs_symlink(const char *target, const char *link_path) {
    pay(METADATA, OP_SYMLINK);
    return result(symlinkat(target, root_fd, relative(link_path)));
}

static int fs_link(const char *existing, const char *link_path) {
    pay(METADATA, OP_LINK);
    return result(linkat(root_fd, relative(existing), root_fd, relative(link_path), 0));
}

static int fs_mknod(const char *path, mode_t mode, dev_t device) {
    pay(METADATA, OP_MKNOD);
    return result(mknodat(root_fd, relative(path), mode, device));
}

/* -- files --------------------------------------------------------------------------------- */

static int fs_open(const char *path, struct fuse_file_info *file) {
    pay(METADATA, OP_OPEN);
    int fd = openat(root_fd, relative(path), (file->flags & ~O_CREAT) | O_CLOEXEC);
    if (fd == -1) return -errno;
    file->fh = (uint64_t)fd;
    return 0;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *file) {
    pay(METADATA, OP_CREATE);
    int fd = openat(root_fd, relative(path), file->flags | O_CREAT | O_CLOEXEC, mode);
    if (fd == -1) return -errno;
    file->fh = (uint64_t)fd;
    return 0;
}

static int fs_read(const char *path, char *buffer, size_t size, off_t offset, struct fuse_file_info *file) {
    (void)path;
    ssize_t done = pread((int)file->fh, buffer, size, offset);
    return done == -1 ? -errno : (int)done;
}

static int fs_write(const char *path, const char *data, size_t size, off_t offset,
                    struct fuse_file_info *file) {
    (void)path;
    ssize_t done = pwrite((int)file->fh, data, size, offset);
    return done == -1 ? -errno : (int)done;
}

static int fs_truncate(const char *path, off_t length, struct fuse_file_info *file) {
    if (file) return result(ftruncate((int)file->fh, length));
    int fd = openat(root_fd, relative(path), O_WRONLY | O_CLOEXEC);
    if (fd == -1) return -errno;
    int status = result(ftruncate(fd, length));
    close(fd);
    return status;
}

static int fs_flush(const char *path, struct fuse_file_info *file) {
    (void)path, (void)file;
    return 0;
}

static int fs_release(const char *path, struct fuse_file_info *file) {
    (void)path;
    close((int)file->fh);
    return 0;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *file) {
    (void)path;
    pay(FSYNC, OP_FSYNC_FILE);
    return result(datasync ? fdatasync((int)file->fh) : fsync((int)file->fh));
}

static int fs_fsyncdir(const char *path, int datasync, struct fuse_file_info *file) {
    (void)path, (void)datasync, (void)file;
    pay(FSYNC, OP_FSYNCDIR);
    return 0;
}

/* -- locks --------------------------------------------------------------------------------- */

static int fs_flock(const char *path, struct fuse_file_info *file, int operation) {
    (void)path;
    /* One unlock per write transaction of the queue: its count is their number. */
    pay(LOCK, (operation & LOCK_UN) ? OP_FLOCK_UNLOCK : OP_FLOCK);
    return result(flock((int)file->fh, operation));
}

/* The open file description that holds one lock owner's POSIX locks on one file (by inode, so
   that a rename or an unlink while locked still finds it). `users`: lock calls on it in flight,
   outside the guard; a whole-file unlock meanwhile drops the locks but keeps the description. */
struct owner {
    dev_t device;
    ino_t inode;
    uint64_t lock_owner;
    int fd;
    int users;
    struct owner *next;
};
static struct owner *owners;
static pthread_mutex_t owners_guard = PTHREAD_MUTEX_INITIALIZER;

static struct owner **find_owner(const struct stat *file, uint64_t lock_owner) {
    struct owner **link = &owners;
    while (*link && ((*link)->lock_owner != lock_owner || (*link)->inode != file->st_ino ||
                     (*link)->device != file->st_dev))
        link = &(*link)->next;
    return link;
}

static int fs_lock(const char *path, struct fuse_file_info *file, int command, struct flock *request) {
    struct stat identity;
    if (fstat((int)file->fh, &identity) == -1) return -errno;
    int whole_unlock = request->l_type == F_UNLCK && request->l_start == 0 && request->l_len == 0;
    pthread_mutex_lock(&owners_guard);
    int held = *find_owner(&identity, file->lock_owner) != NULL;
    pthread_mutex_unlock(&owners_guard);
    if (whole_unlock && !held) return 0; /* libfuse unlocks on every close: no server is asked */
    pay(LOCK, OP_FCNTL);
    pthread_mutex_lock(&owners_guard);
    struct owner **link = find_owner(&identity, file->lock_owner);
    if (!*link) {
        if (whole_unlock) {
            pthread_mutex_unlock(&owners_guard);
            return 0;
        }
        int fd = openat(root_fd, relative(path), O_RDWR | O_CLOEXEC);
        struct owner *added = fd == -1 ? NULL : malloc(sizeof *added);
        if (!added) {
            int error = fd == -1 ? errno : ENOMEM;
            if (fd != -1) close(fd);
            pthread_mutex_unlock(&owners_guard);
            return -error;
        }
        *added = (struct owner){identity.st_dev, identity.st_ino, file->lock_owner, fd, 0, NULL};
        *link = added;
    }
    struct owner *owner = *link;
    if (whole_unlock && command != F_GETLK && owner->users == 0) {
        /* Closing the description drops all of the owner's locks: what a process's unlock of
           the whole file (or its close) means. */
        *link = owner->next;
        pthread_mutex_unlock(&owners_guard);
        close(owner->fd);
        free(owner);
        return 0;
    }
    owner->users++;
    pthread_mutex_unlock(&owners_guard);
    struct flock asked = *request;
    asked.l_pid = 0;
    int ofd_command = command == F_GETLK ? F_OFD_GETLK : command == F_SETLKW ? F_OFD_SETLKW : F_OFD_SETLK;
    int status = fcntl(owner->fd, ofd_command, &asked) == -1 ? (errno == EACCES ? -EAGAIN : -errno) : 0;
    pthread_mutex_lock(&owners_guard);
    owner->users--;
    pthread_mutex_unlock(&owners_guard);
    if (status == 0 && command == F_GETLK) {
        *request = asked;
        request->l_pid = asked.l_type != F_UNLCK ? -1 : 0;
    }
    return status;
}

static const struct fuse_operations operations = {
    .init = fs_init,
    .destroy = fs_destroy,
    .getattr = fs_getattr,
    .access = fs_access,
    .readdir = fs_readdir,
    .readlink = fs_readlink,
    .statfs = fs_statfs,
    .chmod = fs_chmod,
    .chown = fs_chown,
    .utimens = fs_utimens,
    .mkdir = fs_mkdir,
    .rmdir = fs_rmdir,
    .unlink = fs_unlink,
    .rename = fs_rename,
    .symlink = fs_symlink,
    .link = fs_link,
    .mknod = fs_mknod,
    .open = fs_open,
    .create = fs_create,
    .read = fs_read,
    .write = fs_write,
    .truncate = fs_truncate,
    .flush = fs_flush,
    .release = fs_release,
    .fsync = fs_fsync,
    .fsyncdir = fs_fsyncdir,
    .flock = fs_flock,
    .lock = fs_lock,
};

static void ignore_signal(int number) { (void)number; }

static int parse_ms(const char *text, double *value) {
    char *end;
    *value = strtod(text, &end);
    return *end == '\0' && end != text && *value >= 0 && *value < 1e6; /* rejects inf and nan */
}

int main(int argc, char *argv[]) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s FOLDER MOUNTPOINT STATS_FILE METADATA_MS FSYNC_MS LOCK_MS\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < KINDS; i++) {
        if (!parse_ms(argv[4 + i], &latency_ms[i])) {
            fprintf(stderr, "slowfs: %s latency %s is not a number of milliseconds from 0 to 1e6\n", kind_names[i],
                    argv[4 + i]);
            return 2;
        }
    }
    root_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd == -1) {
        fprintf(stderr, "slowfs: cannot open the folder %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    stats_file = argv[3];
    /* libfuse interrupts a request's thread with SIGUSR1 (config->intr, set in fs_init): a no-op
       handler without SA_RESTART, so that the blocked call returns EINTR to the client. */
    struct sigaction interrupted = {.sa_handler = ignore_signal};
    sigemptyset(&interrupted.sa_mask);
    sigaction(SIGUSR1, &interrupted, NULL);
    dump_stats();
    umask(0); /* the modes asked for are the callers', already masked by their umask */
    /* Every waiter for a lock holds a thread until it gets it: allow as many as hogs
       (max_threads needs libfuse 3.12 or newer). */
    char *fuse_argv[] = {
        argv[0], argv[2], "-f", "-o",
        "allow_other,default_permissions,fsname=slowfs,subtype=slowfs,max_threads=4096,max_idle_threads=64",
        NULL};
    return fuse_main(5, fuse_argv, &operations, NULL);
}
