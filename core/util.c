#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- what the signal handlers must know: temporary paths and mapped files ----
 * Fixed tables, no allocation, so a handler can read them at any moment. A slot is claimed with
 * a compare-and-swap (BUSY), filled, then published (READY); handlers look at READY slots only.
 * A table that is full just means that one path or map goes unreported. */
enum { SLOT_FREE = 0, SLOT_BUSY, SLOT_READY };
#define TEMP_SLOTS 32
#define MAP_SLOTS 256

typedef struct temp_slot {
    int  state, is_dir;
    char path[4096 + 32];
} temp_slot;

typedef struct map_slot {
    int            state;
    const uint8_t *addr;
    size_t         size;
    char           path[512];
} map_slot;

static temp_slot temp_slots[TEMP_SLOTS];
static map_slot  map_slots[MAP_SLOTS];

static int slot_claim(int *state) {
    int want = SLOT_FREE;
    return __atomic_compare_exchange_n(state, &want, SLOT_BUSY, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

static int slot_ready(const int *state) {
    return __atomic_load_n(state, __ATOMIC_ACQUIRE) == SLOT_READY;
}

static void temp_register(const char *path, int is_dir) {
    if (strlen(path) >= sizeof temp_slots[0].path)
        return;
    for (int i = 0; i < TEMP_SLOTS; i++)
        if (slot_claim(&temp_slots[i].state)) {
            strcpy(temp_slots[i].path, path);
            temp_slots[i].is_dir = is_dir;
            __atomic_store_n(&temp_slots[i].state, SLOT_READY, __ATOMIC_RELEASE);
            return;
        }
}

static void temp_unregister(const char *path) {
    for (int i = 0; i < TEMP_SLOTS; i++)
        if (slot_ready(&temp_slots[i].state) && !strcmp(temp_slots[i].path, path)) {
            __atomic_store_n(&temp_slots[i].state, SLOT_FREE, __ATOMIC_RELEASE);
            return;
        }
}

static void map_register(const uint8_t *addr, size_t size, const char *path) {
    for (int i = 0; i < MAP_SLOTS; i++)
        if (slot_claim(&map_slots[i].state)) {
            map_slots[i].addr = addr;
            map_slots[i].size = size;
            snprintf(map_slots[i].path, sizeof map_slots[i].path, "%s", path);
            __atomic_store_n(&map_slots[i].state, SLOT_READY, __ATOMIC_RELEASE);
            return;
        }
}

static void map_unregister(const uint8_t *addr) {
    for (int i = 0; i < MAP_SLOTS; i++)
        if (slot_ready(&map_slots[i].state) && map_slots[i].addr == addr) {
            __atomic_store_n(&map_slots[i].state, SLOT_FREE, __ATOMIC_RELEASE);
            return;
        }
}

/* Async-signal-safe: a temporary directory is flat (convert writes files only), so unlinking its
 * entries one level deep and then the directory is enough; getdents64 needs no allocation. */
static void temp_dir_remove_flat(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        char    buf[4096] __attribute__((aligned(8)));
        ssize_t n;
        while ((n = getdents64(fd, buf, sizeof buf)) > 0) {
            for (ssize_t off = 0; off < n;) {
                struct dirent64 *d = (struct dirent64 *)(buf + off);
                off += d->d_reclen;
                if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
                    unlinkat(fd, d->d_name, 0);
            }
        }
        close(fd);
    }
    rmdir(path);
}

/* Async-signal-safe. Files first: a temporary file may live inside a temporary directory. */
static void temps_remove_all(void) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < TEMP_SLOTS; i++) {
            temp_slot *t = &temp_slots[i];
            if (!slot_ready(&t->state) || t->is_dir != pass)
                continue;
            if (t->is_dir)
                temp_dir_remove_flat(t->path);
            else
                unlink(t->path);
        }
}

static void write_str(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_terminate(int sig) {
    temps_remove_all();
    /* SA_RESETHAND restored the default action: die of the same signal, as the caller expects */
    raise(sig);
}

static void on_sigbus(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    const uint8_t *a = si->si_addr;
    for (int i = 0; i < MAP_SLOTS; i++) {
        const map_slot *m = &map_slots[i];
        if (slot_ready(&m->state) && a >= m->addr && a < m->addr + m->size) {
            write_str("assay: ");
            write_str(m->path);
            write_str(": file changed while being read (truncated?)\n");
            temps_remove_all();
            _exit(2);
        }
    }
    /* Not one of our files: a real fault. The default action (restored by SA_RESETHAND) takes over
     * when the faulting access runs again. */
    temps_remove_all();
}

void util_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler           = on_terminate;
    sa.sa_flags             = SA_RESETHAND;
    static const int term[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof term / sizeof *term; i++) {
        struct sigaction old;
        /* a signal the caller chose to ignore (nohup) stays ignored */
        if (sigaction(term[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(term[i], &sa, NULL);
    }
    sa.sa_handler   = NULL;
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags     = SA_SIGINFO | SA_RESETHAND;
    sigaction(SIGBUS, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN);
}

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a FIFO (named pipe)";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    return "not a regular file";
}

int file_open_regular(const char *path, size_t *size_out, assay_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        assay_fail(err, ASSAY_EIO, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        assay_fail(err, ASSAY_EIO, "%s: cannot stat: %s", path, strerror(e));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        assay_fail(err, ASSAY_EIO, "%s: is %s; expected a regular file", path,
                   file_kind(st.st_mode));
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        assay_fail(err, ASSAY_EIO, "%s: cannot open: %s", path, strerror(e));
        return -1;
    }
    if (size_out)
        *size_out = (size_t)st.st_size;
    return fd;
}

int file_map(mapped_file *m, const char *path, assay_error *err) {
    m->data     = NULL;
    m->size     = 0;
    size_t size = 0;
    int    fd   = file_open_regular(path, &size, err);
    if (fd < 0)
        return ASSAY_EIO;
    if (size == 0) {
        close(fd);
        return ASSAY_OK;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int   e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return assay_fail(err, ASSAY_EIO, "%s: cannot mmap: %s", path, strerror(e));
    m->data = p;
    m->size = size;
    map_register(m->data, size, path);
    return ASSAY_OK;
}

void file_unmap(mapped_file *m) {
    if (m && m->data) {
        map_unregister(m->data);
        munmap((void *)m->data, m->size);
        m->data = NULL;
        m->size = 0;
    }
}

static void size_human(char *buf, size_t cap, size_t n) {
    if (n >= ((size_t)1 << 30) && n % ((size_t)1 << 30) == 0)
        snprintf(buf, cap, "%zu GiB", n >> 30);
    else if (n >= ((size_t)1 << 20) && n % ((size_t)1 << 20) == 0)
        snprintf(buf, cap, "%zu MiB", n >> 20);
    else
        snprintf(buf, cap, "%zu bytes", n);
}

int file_read_capped(const char *path, size_t max, char **out, size_t *size_out, assay_error *err) {
    *out        = NULL;
    size_t size = 0;
    int    fd   = file_open_regular(path, &size, err);
    if (fd < 0)
        return ASSAY_EIO;
    if (size > max) {
        close(fd);
        char h[32];
        size_human(h, sizeof h, max);
        return assay_fail(err, ASSAY_EINVAL, "%s: %zu bytes, more than the %s this file may have",
                          path, size, h);
    }
    /* The size from fstat is a hint: the file may grow or shrink while we read it. Read at most
     * max + 1 bytes so growth past the cap is caught, never more. */
    size_t cap = size + 1, n = 0;
    char  *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                free(buf);
                close(fd);
                char h[32];
                size_human(h, sizeof h, max);
                return assay_fail(err, ASSAY_EINVAL, "%s: grew past the %s this file may have",
                                  path, h);
            }
            size_t ncap = cap < max / 2 ? cap * 2 : max + 1;
            char  *nb   = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return assay_fail(err, ASSAY_EIO, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out   = buf;
    if (size_out)
        *size_out = n;
    return ASSAY_OK;
}

int file_read_all(const char *path, char **out, size_t *size_out, assay_error *err) {
    return file_read_capped(path, FILE_READ_MAX, out, size_out, err);
}

int atomic_open(atomic_file *af, const char *path, assay_error *err) {
    af->fp          = NULL;
    af->tmp_path[0] = '\0';
    if (strlen(path) >= sizeof af->path)
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", path);
    strcpy(af->path, path);
    strcpy(af->target, path);
    struct stat st;
    int         exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return assay_fail(err, ASSAY_EINVAL, "%s: is a directory; expected a file to write", path);
    if (exists && !S_ISREG(st.st_mode)) {
        /* a device or FIFO is where the output goes, not a file to replace */
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || !(af->fp = fdopen(fd, "wb"))) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return assay_fail(err, ASSAY_EIO, "%s: cannot open for writing: %s", path, strerror(e));
        }
        return ASSAY_OK;
    }
    struct stat lst;
    if (exists && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        char real[PATH_MAX];
        if (!realpath(path, real) || strlen(real) >= sizeof af->target)
            return assay_fail(err, ASSAY_EIO, "%s: cannot resolve the symbolic link: %s", path,
                              strerror(errno ? errno : ENAMETOOLONG));
        strcpy(af->target, real);
    }
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", af->target, (long)getpid());
    /* registered before it exists: a signal between the two would otherwise leave it behind */
    temp_register(af->tmp_path, 0);
    int fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) { /* left by a killed process that had our pid */
        unlink(af->tmp_path);
        fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (fd < 0 || !(af->fp = fdopen(fd, "wb"))) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(af->tmp_path);
        }
        temp_unregister(af->tmp_path);
        af->tmp_path[0] = '\0';
        return assay_fail(err, ASSAY_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    return ASSAY_OK;
}

static void atomic_drop_tmp(atomic_file *af) {
    if (af->tmp_path[0]) {
        unlink(af->tmp_path);
        temp_unregister(af->tmp_path);
        af->tmp_path[0] = '\0';
    }
}

int atomic_commit(atomic_file *af, assay_error *err) {
    if (!af->fp)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: not open", af->path);
    /* errno of the first failure: an earlier fwrite's, else fflush's, fsync's or fclose's */
    int bad = ferror(af->fp), e = bad ? errno : 0;
    if (fflush(af->fp) != 0 && !bad) {
        bad = 1;
        e   = errno;
    }
    if (!bad && af->tmp_path[0] && fsync(fileno(af->fp)) != 0 && errno != EINVAL) {
        bad = 1;
        e   = errno;
    }
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1;
        e   = errno;
    }
    af->fp = NULL;
    if (bad) {
        atomic_drop_tmp(af);
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", af->path, strerror(e ? e : EIO));
    }
    if (!af->tmp_path[0])
        return ASSAY_OK;
    if (rename(af->tmp_path, af->target) != 0) {
        e = errno;
        atomic_drop_tmp(af);
        return assay_fail(err, ASSAY_EIO, "%s: cannot rename into place: %s", af->path,
                          strerror(e));
    }
    temp_unregister(af->tmp_path);
    af->tmp_path[0] = '\0';
    return ASSAY_OK;
}

void atomic_abort(atomic_file *af) {
    int e = errno;
    if (af && af->fp) {
        fclose(af->fp);
        af->fp = NULL;
        atomic_drop_tmp(af);
    }
    errno = e;
}

int file_write_atomic(const char *path, const void *data, size_t size, assay_error *err) {
    atomic_file af;
    int         rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    if (size && fwrite(data, 1, size, af.fp) != size) {
        int e = errno;
        atomic_abort(&af);
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", path, strerror(e ? e : EIO));
    }
    return atomic_commit(&af, err);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int dir_create_temp(char *tmp, size_t cap, const char *out, assay_error *err) {
    int n = snprintf(tmp, cap, "%s.tmp.%ld", out, (long)getpid());
    if (n < 0 || (size_t)n >= cap)
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", out);
    /* registered before it exists: a signal between the two would otherwise leave it behind */
    temp_register(tmp, 1);
    if (mkdir(tmp, 0777) != 0) {
        int e = errno;
        temp_unregister(tmp);
        return assay_fail(err, ASSAY_EIO, "%s: cannot create the temporary directory %s: %s", out,
                          tmp, strerror(e));
    }
    return ASSAY_OK;
}

void dir_discard_temp(const char *tmp) {
    if (!tmp || !tmp[0])
        return;
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    temp_unregister(tmp);
}

void dir_keep_temp(const char *tmp) {
    if (tmp && tmp[0])
        temp_unregister(tmp);
}

int dir_publish(const char *tmp, const char *out, int force, assay_error *err) {
    /* Each step is one system call that either happens whole or not at all; the loop only runs
     * again when `out` vanished between the two renames. */
    for (int tries = 0; tries < 8; tries++) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE) == 0) {
            temp_unregister(tmp);
            return ASSAY_OK;
        }
        if (errno != EEXIST)
            return assay_fail(err, ASSAY_EIO, "%s: cannot rename %s into place: %s", out, tmp,
                              strerror(errno));
        if (!force)
            return assay_fail(err, ASSAY_EINVAL, "%s: already exists (use --force to replace it)",
                              out);
        struct stat st;
        if (lstat(out, &st) != 0) {
            if (errno == ENOENT)
                continue;
            return assay_fail(err, ASSAY_EIO, "%s: cannot stat: %s", out, strerror(errno));
        }
        if (!S_ISDIR(st.st_mode))
            return assay_fail(err, ASSAY_EINVAL, "%s: exists and is %s; not replacing it", out,
                              S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory");
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
            dir_discard_temp(tmp); /* the old tree, now under tmp's name */
            return ASSAY_OK;
        }
        if (errno != ENOENT)
            return assay_fail(err, ASSAY_EIO, "%s: cannot exchange it with %s: %s", out, tmp,
                              strerror(errno));
    }
    return assay_fail(err, ASSAY_EIO, "%s: kept appearing and vanishing while being replaced", out);
}

int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int path_present(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int path_join(char *out, size_t cap, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    int    n  = (dl > 0 && dir[dl - 1] == '/') ? snprintf(out, cap, "%s%s", dir, name)
                                               : snprintf(out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int str_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

int size_mul(size_t a, size_t b, size_t *out) {
    if (b != 0 && a > SIZE_MAX / b)
        return -1;
    *out = a * b;
    return 0;
}

int size_add(size_t a, size_t b, size_t *out) {
    if (a > SIZE_MAX - b)
        return -1;
    *out = a + b;
    return 0;
}

double float_shortest_decimal(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return (double)f;
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
