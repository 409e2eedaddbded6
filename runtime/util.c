#include "runtime/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    return ASSAY_OK;
}

void file_unmap(mapped_file *m) {
    if (m && m->data) {
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
    af->fp = NULL;
    if (strlen(path) >= sizeof af->path)
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", path);
    strcpy(af->path, path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp)
        return assay_fail(err, ASSAY_EIO, "%s: cannot create: %s", af->tmp_path, strerror(errno));
    return ASSAY_OK;
}

int atomic_commit(atomic_file *af, assay_error *err) {
    if (!af->fp)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: not open", af->path);
    int bad = fflush(af->fp) != 0 || ferror(af->fp);
    if (!bad)
        bad = fsync(fileno(af->fp)) != 0 && errno != EINVAL;
    int e = errno;
    bad |= fclose(af->fp) != 0;
    af->fp = NULL;
    if (bad) {
        unlink(af->tmp_path);
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", af->path, strerror(e));
    }
    if (rename(af->tmp_path, af->path) != 0) {
        e = errno;
        unlink(af->tmp_path);
        return assay_fail(err, ASSAY_EIO, "%s: cannot rename into place: %s", af->path,
                          strerror(e));
    }
    return ASSAY_OK;
}

void atomic_abort(atomic_file *af) {
    if (af && af->fp) {
        fclose(af->fp);
        af->fp = NULL;
        unlink(af->tmp_path);
    }
}

int file_write_atomic(const char *path, const void *data, size_t size, assay_error *err) {
    atomic_file af;
    int         rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    if (size && fwrite(data, 1, size, af.fp) != size) {
        atomic_abort(&af);
        return assay_fail(err, ASSAY_EIO, "%s: write failed", path);
    }
    return atomic_commit(&af, err);
}

int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
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
