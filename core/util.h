/* core/util.h — small file and memory helpers shared by every layer. */
#ifndef ASSAY_UTIL_H
#define ASSAY_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

/* A read-only memory map of a whole file. Empty files map to data == NULL, size == 0. */
typedef struct mapped_file {
    const uint8_t *data;
    size_t         size;
} mapped_file;

/* Opens `path` for reading without ever blocking on it: O_NONBLOCK until fstat has said what it is
 * (open() on a FIFO blocks until a writer comes; /dev/zero never ends), then blocking again.
 * Anything but a regular file (directory, FIFO, socket, device) is refused with a message naming
 * the path and what it is. Returns an fd (O_CLOEXEC) or -1 with err set (ASSAY_EIO);
 * *size_out (may be NULL) gets the file's size. */
int file_open_regular(const char *path, size_t *size_out, assay_error *err);

/* Maps a regular file read-only. While mapped, the region is known to the signal handlers: a
 * SIGBUS inside it (the file was truncated meanwhile) is reported naming the file. */
int  file_map(mapped_file *m, const char *path, assay_error *err);
void file_unmap(mapped_file *m); /* NULL-safe, idempotent */

/* Reads a whole regular file (file_open_regular: FIFOs, devices and directories are refused) into
 * a NUL-terminated malloc'd buffer (caller frees). *size_out may be NULL. A file larger than
 * `max` bytes is refused before anything is read, with a message naming the path and the cap.
 * file_read_all uses FILE_READ_MAX. */
#define FILE_READ_MAX ((size_t)1 << 30) /* 1 GiB */
int file_read_capped(const char *path, size_t max, char **out, size_t *size_out, assay_error *err);
int file_read_all(const char *path, char **out, size_t *size_out, assay_error *err);

/* Atomic output: a regular file (or a new path) is written to "<path>.tmp.<pid>" and renamed into
 * place on commit; through a symlink, the file it points to is the one replaced. Something that
 * is not a regular file (a character device such as /dev/null, a FIFO) is written in place, never
 * replaced; a directory is refused. Errors name `path`, and a failed write says why (strerror).
 * The temporary file is removed on abort, on a failed commit and by the signal handlers. */
typedef struct atomic_file {
    FILE *fp;
    char  path[4096];          /* what the caller asked for (messages) */
    char  target[4096];        /* the file replaced: path, or where its symlink points */
    char  tmp_path[4096 + 32]; /* "" when writing in place */
} atomic_file;

int  atomic_open(atomic_file *af, const char *path, assay_error *err);
int  atomic_commit(atomic_file *af, assay_error *err); /* fclose + fsync + rename */
void atomic_abort(atomic_file *af);                    /* fclose + unlink; NULL-safe; keeps errno */

/* Writes a whole buffer atomically. */
int file_write_atomic(const char *path, const void *data, size_t size, assay_error *err);

/* Output directories built under a temporary sibling and published in one step.
 * dir_create_temp makes "<out>.tmp.<pid>" (into tmp, cap bytes) and registers it for the signal
 * handlers. dir_publish renames it to `out`: without `force` an existing `out` (even one that
 * appeared a moment ago) is never touched (RENAME_NOREPLACE); with `force` an existing directory
 * is exchanged atomically and the old tree, now under tmp's name, removed afterwards.
 * dir_discard_temp removes the temporary tree (NULL-safe); dir_keep_temp leaves it where it is
 * and no longer removes it on a signal (it holds something that must survive). */
int  dir_create_temp(char *tmp, size_t cap, const char *out, assay_error *err);
int  dir_publish(const char *tmp, const char *out, int force, assay_error *err);
void dir_discard_temp(const char *tmp);
void dir_keep_temp(const char *tmp);

/* Signal handling for the CLI (call once, first thing in main):
 * SIGINT, SIGTERM, SIGHUP: remove the registered temporary files and directories, then die of the
 * signal as before. SIGBUS inside a file_map region: "assay: PATH: file changed while being read
 * (truncated?)", temporaries removed, exit 2. SIGXFSZ is ignored, so a write over `ulimit -f`
 * fails with EFBIG and takes the normal error path. */
void util_install_signal_handlers(void);

/* Path helpers. */
int path_is_dir(const char *path);
int path_exists(const char *path);
int path_present(const char *path); /* lstat: anything at that name, even a dangling symlink */
int path_join(char *out, size_t cap, const char *dir, const char *name); /* 0 ok, -1 too long */
int str_ends_with(const char *s, const char *suffix);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int size_mul(size_t a, size_t b, size_t *out);
int size_add(size_t a, size_t b, size_t *out);

/* The shortest decimal that reads back as the same float, as a double: 1e-5f gives 1e-05, not
 * 9.9999997473787516e-06 (for JSON output). */
double float_shortest_decimal(float f);

/* Monotonic clock in seconds. */
double time_now(void);

#endif
