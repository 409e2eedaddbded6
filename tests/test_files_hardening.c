/* tests/test_files_hardening.c — hostile files and signals: an OUT_DIR that appears while convert
 * runs, output paths that are devices, FIFOs, symlinks or directories, FIFOs and endless devices
 * given as inputs, a mapped file truncated under us, `ulimit -f`, and SIGTERM in mid-write. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "core/util.h"
#include "tests/helpers.h"

#define TINY "tests/fixtures/gguf/tiny.gguf"
#define LLAMA "tests/fixtures/models/llama"

/* test_run runs `BIN ARGS` through sh. A no-op first command lets a test put a shell prefix
 * (timeout, ulimit, a background reader) before the second, real run of the binary. */
#define SH_PREFIX "version >/dev/null; "

/* `timeout 10` so that a regression that blocks fails the test instead of hanging it. */
#define RUN_T(out, fmt, ...) test_run(out, SH_PREFIX "timeout 10 %s " fmt, test_bin(), __VA_ARGS__)

static void put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static void rm_rf(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Names in dir other than those listed (NULL-terminated), for "nothing else was left". */
static int count_other_entries(const char *dir, const char *const *keep) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    FILE *p = popen(cmd, "r");
    char  line[512];
    int   n = 0;
    while (p && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        int known                 = 0;
        for (int i = 0; keep && keep[i]; i++)
            known |= !strcmp(line, keep[i]);
        if (!known) {
            fprintf(stderr, "left in %s: %s\n", dir, line);
            n++;
        }
    }
    if (p)
        pclose(p);
    return n;
}

static mode_t mode_of(const char *path) {
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
    return st.st_mode;
}

static void write_requests(const char *path) {
    put_file(path, "{\"context\": \"The river ran low that\", \"continuation\": \" year\"}\n"
                   "{\"context\": \"Knead for ten\", \"continuation\": \" minutes\"}\n");
}

/* ---- item 1: convert's OUT_DIR ---- */

Test(files, dir_publish_never_touches_a_directory_that_appeared_meanwhile) {
    char dir[64], out[128], tmp[256], p[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    assay_error err;
    cr_assert_eq(dir_create_temp(tmp, sizeof tmp, out, &err), 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    put_file(p, "new");
    /* the user's directory appears after convert's start-up check */
    cr_assert_eq(mkdir(out, 0777), 0);
    snprintf(p, sizeof p, "%s/notes.txt", out);
    put_file(p, "mine");
    cr_assert_eq(dir_publish(tmp, out, 0, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, out) && strstr(err.msg, "already exists"), "%s", err.msg);
    char *back = NULL;
    cr_assert_eq(file_read_all(p, &back, NULL, &err), 0, "notes.txt was lost: %s", err.msg);
    cr_assert_str_eq(back, "mine");
    free(back);
    dir_discard_temp(tmp);
    cr_assert(!path_present(tmp));
    static const char *const keep[] = {"out", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0);
    rm_rf(dir);
}

Test(files, dir_publish_with_force_swaps_in_the_new_directory_whole) {
    char dir[64], out[128], tmp[256], p[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert_eq(mkdir(out, 0777), 0);
    snprintf(p, sizeof p, "%s/old.txt", out);
    put_file(p, "old");
    assay_error err;
    cr_assert_eq(dir_create_temp(tmp, sizeof tmp, out, &err), 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/new.txt", tmp);
    put_file(p, "new");
    cr_assert_eq(dir_publish(tmp, out, 1, &err), 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/new.txt", out);
    cr_assert(path_exists(p));
    snprintf(p, sizeof p, "%s/old.txt", out);
    cr_assert(!path_exists(p));
    cr_assert(!path_present(tmp), "the old tree was left under the temporary name");

    /* --force replaces a directory, nothing else */
    char file[128];
    snprintf(file, sizeof file, "%s/file", dir);
    put_file(file, "keep");
    cr_assert_eq(dir_create_temp(tmp, sizeof tmp, file, &err), 0, "%s", err.msg);
    cr_assert_eq(dir_publish(tmp, file, 1, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "not a directory"), "%s", err.msg);
    cr_assert(S_ISREG(mode_of(file)));
    dir_discard_temp(tmp);
    rm_rf(dir);
}

/* Six converts race for one OUT_DIR without --force: exactly one may create it. */
Test(files, concurrent_converts_to_one_out_dir_leave_one_winner) {
    char dir[64], out[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    test_run(&log,
             SH_PREFIX
             "for i in 1 2 3 4 5 6; do (%s convert %s %s >/dev/null 2>&1; echo \"rc=$?\") "
             "& done; wait",
             test_bin(), TINY, out);
    int wins = 0, refused = 0;
    for (const char *s = log; (s = strstr(s, "rc=")); s += 3) {
        wins += s[3] == '0';
        refused += s[3] == '2';
    }
    cr_assert(wins == 1 && refused == 5, "%d succeeded, %d refused:\n%s", wins, refused, log);
    free(log);
    static const char *const keep[] = {"out", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0);
    rm_rf(dir);
}

/* ---- item 2: --output PATH that is not a regular file ---- */

Test(files, output_to_a_fifo_writes_through_it) {
    char dir[64], fifo[128], got[128], req[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(got, sizeof got, "%s/got", dir);
    snprintf(req, sizeof req, "%s/req.jsonl", dir);
    write_requests(req);
    cr_assert_eq(mkfifo(fifo, 0666), 0);
    int rc = test_run(&log,
                      SH_PREFIX "timeout 10 cat %s > %s & timeout 10 %s score " LLAMA
                                " --requests %s --output %s; rc=$?; wait; exit $rc",
                      fifo, got, test_bin(), req, fifo);
    cr_assert_eq(rc, 0, "%s", log);
    free(log);
    cr_assert(S_ISFIFO(mode_of(fifo)), "the FIFO was replaced");
    char *text = NULL;
    cr_assert_eq(file_read_all(got, &text, NULL, NULL), 0);
    cr_assert(strstr(text, "logprob"), "the reader got: '%s'", text);
    free(text);
    static const char *const keep[] = {"fifo", "got", "req.jsonl", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0);
    rm_rf(dir);
}

/* A private /dev/full and /dev/null (mknod: tests run as root; skipped where that is refused). */
Test(files, output_to_a_device_is_written_in_place_and_enospc_says_why) {
    char dir[64], full[128], null[128], req[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(full, sizeof full, "%s/full", dir);
    snprintf(null, sizeof null, "%s/null", dir);
    snprintf(req, sizeof req, "%s/req.jsonl", dir);
    write_requests(req);
    if (mknod(full, S_IFCHR | 0666, makedev(1, 7)) != 0 ||
        mknod(null, S_IFCHR | 0666, makedev(1, 3)) != 0) {
        rm_rf(dir);
        fprintf(stderr, "SKIP: mknod refused (%s)\n", strerror(errno));
        cr_skip_test("mknod refused");
    }
    cr_assert_eq(test_run(&log, "score " LLAMA " --requests %s --output %s", req, null), 0, "%s",
                 log);
    free(log);
    cr_assert(S_ISCHR(mode_of(null)), "the device was replaced by a file");
    cr_assert_eq(test_run(&log, "score " LLAMA " --requests %s --output %s", req, full), 2, "%s",
                 log);
    cr_assert(strstr(log, full) && strstr(log, "No space left on device"), "%s", log);
    free(log);
    cr_assert(S_ISCHR(mode_of(full)));
    static const char *const keep[] = {"full", "null", "req.jsonl", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0);
    rm_rf(dir);
}

Test(files, output_through_a_symlink_replaces_its_target) {
    char dir[64], real[128], link[128], req[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(real, sizeof real, "%s/real.jsonl", dir);
    snprintf(link, sizeof link, "%s/link.jsonl", dir);
    snprintf(req, sizeof req, "%s/req.jsonl", dir);
    write_requests(req);
    put_file(real, "old\n");
    cr_assert_eq(symlink("real.jsonl", link), 0);
    cr_assert_eq(test_run(&log, "score " LLAMA " --requests %s --output %s", req, link), 0, "%s",
                 log);
    free(log);
    cr_assert(S_ISLNK(mode_of(link)), "the symlink was replaced");
    char *text = NULL;
    cr_assert_eq(file_read_all(real, &text, NULL, NULL), 0);
    cr_assert(strstr(text, "logprob") && !strstr(text, "old"), "%s", text);
    free(text);
    static const char *const keep[] = {"real.jsonl", "link.jsonl", "req.jsonl", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0);
    rm_rf(dir);
}

Test(files, output_errors_name_the_path_not_the_temporary) {
    char dir[64], req[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(req, sizeof req, "%s/req.jsonl", dir);
    write_requests(req);
    cr_assert_eq(
        test_run(&log, "score " LLAMA " --requests %s --output %s/no/such/out.jsonl", req, dir), 2,
        "%s", log);
    cr_assert(strstr(log, "/no/such/out.jsonl: cannot create") && !strstr(log, ".tmp."), "%s", log);
    free(log);
    cr_assert_eq(test_run(&log, "score " LLAMA " --requests %s --output %s", req, dir), 2, "%s",
                 log);
    cr_assert(strstr(log, "is a directory"), "%s", log);
    free(log);
    rm_rf(dir);
}

Test(files, atomic_open_refuses_a_directory_and_keeps_the_path_in_errors) {
    char        dir[64];
    atomic_file af;
    assay_error err;
    test_tmpdir(dir, sizeof dir);
    cr_assert_eq(atomic_open(&af, dir, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, dir) && strstr(err.msg, "is a directory"), "%s", err.msg);
    rm_rf(dir);
}

/* ---- item 3: signals ---- */

/* Runs fn in a child with the CLI's handlers and stderr on a pipe; returns the wait status and
 * the child's stderr in msg. */
static int run_child(void (*fn)(const char *), const char *arg, char *msg, size_t cap) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        util_install_signal_handlers();
        fn(arg);
        _exit(99); /* fn was meant not to return */
    }
    close(fds[1]);
    size_t  n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fds[0], msg + n, cap - n - 1)) > 0)
        n += (size_t)r;
    msg[n] = '\0';
    close(fds[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return st;
}

static void child_read_truncated_map(const char *dir) {
    char path[256], out[256];
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(out, sizeof out, "%s/result.json", dir);
    atomic_file af;
    if (atomic_open(&af, out, NULL)) /* a temporary that must not survive */
        _exit(98);
    fputs("partial", af.fp);
    fflush(af.fp);
    mapped_file m;
    if (file_map(&m, path, NULL) || truncate(path, 0) != 0)
        _exit(97);
    volatile uint8_t x = m.data[3 * 4096]; /* past the new end: SIGBUS */
    (void)x;
}

Test(signals, sigbus_on_a_truncated_mapping_names_the_file_and_exits_2) {
    char dir[64], path[128], msg[1024];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    char *zeros = calloc(1, 65536);
    cr_assert_eq(file_write_atomic(path, zeros, 65536, NULL), 0);
    free(zeros);
    int st = run_child(child_read_truncated_map, dir, msg, sizeof msg);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %#x, stderr: %s", st, msg);
    char want[256];
    snprintf(want, sizeof want, "assay: %s: file changed while being read (truncated?)", path);
    cr_assert(strstr(msg, want), "stderr: %s", msg);
    static const char *const keep[] = {"model.bin", NULL};
    cr_assert_eq(count_other_entries(dir, keep), 0, "temporary file left after SIGBUS");
    rm_rf(dir);
}

static void child_write_then_sigterm(const char *dir) {
    char out[256], tmp[300], p[400];
    snprintf(out, sizeof out, "%s/converted", dir);
    if (dir_create_temp(tmp, sizeof tmp, out, NULL))
        _exit(98);
    snprintf(p, sizeof p, "%s/config.json", tmp);
    if (file_write_atomic(p, "{}", 2, NULL))
        _exit(97);
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    atomic_file in_dir, plain;
    snprintf(out, sizeof out, "%s/scores.jsonl", dir);
    if (atomic_open(&in_dir, p, NULL) || atomic_open(&plain, out, NULL))
        _exit(96);
    fputs("partial", in_dir.fp);
    fflush(in_dir.fp);
    raise(SIGTERM);
}

Test(signals, sigterm_removes_temporary_files_and_directories) {
    char dir[64], msg[1024];
    test_tmpdir(dir, sizeof dir);
    int st = run_child(child_write_then_sigterm, dir, msg, sizeof msg);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %#x, stderr: %s", st, msg);
    cr_assert_eq(count_other_entries(dir, NULL), 0, "temporaries left after SIGTERM");
    rm_rf(dir);
}

/* SIGTERM sent to a real convert while its temporary directory exists. The window is a few ms,
 * so the test stops the process (SIGSTOP) as soon as it sees the directory, and tries again
 * when the convert finished first; it needs one kill inside the window. */
Test(signals, sigterm_during_convert_leaves_no_temporary_directory) {
    char dir[64], out[128], tmp[160];
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    int killed = 0;
    for (int attempt = 0; attempt < 40 && !killed; attempt++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, STDERR_FILENO);
            execl(test_bin(), test_bin(), "convert", TINY, out, (char *)NULL);
            _exit(127);
        }
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)pid);
        int   st, seen = 0;
        pid_t done = 0;
        while (!seen && (done = waitpid(pid, &st, WNOHANG)) == 0)
            seen = path_present(tmp);
        if (seen) {
            kill(pid, SIGSTOP);
            if (path_present(tmp)) {
                kill(pid, SIGTERM);
                killed = 1;
            }
            kill(pid, SIGCONT);
            cr_assert_eq(waitpid(pid, &st, 0), pid);
        }
        if (killed)
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %#x", st);
        else
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "convert failed: status %#x", st);
        cr_assert(!path_present(tmp), "%s left behind", tmp);
        if (!killed)
            rm_rf(out);
    }
    cr_assert(killed, "never caught convert while writing");
    cr_assert_eq(count_other_entries(dir, NULL), 0);
    rm_rf(dir);
}

/* `ulimit -f`: writes fail with EFBIG instead of SIGXFSZ killing the process mid-file. dash
 * counts 512-byte blocks, bash 1024: either way far below the 33 KB model.safetensors. */
Test(signals, file_size_limit_is_an_error_that_leaves_nothing) {
    char dir[64], out[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    int rc = test_run(&log, SH_PREFIX "ulimit -f 16; %s convert %s %s", test_bin(), TINY, out);
    cr_assert_eq(rc, 2, "%s", log);
    cr_assert(strstr(log, "model.safetensors") && strstr(log, "File too large"), "%s", log);
    free(log);
    cr_assert_eq(count_other_entries(dir, NULL), 0);
    rm_rf(dir);
}

/* ---- item 4: bounded, non-blocking reads; write errors say why ---- */

Test(files, fifos_and_endless_devices_as_inputs_exit_2_promptly) {
    char  dir[64], fifo[128], fifo_gguf[128], zero_gguf[128], m1[128], m2[128], p[256];
    char *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(fifo_gguf, sizeof fifo_gguf, "%s/fifo.gguf", dir);
    snprintf(zero_gguf, sizeof zero_gguf, "%s/zero.gguf", dir);
    cr_assert_eq(mkfifo(fifo, 0666), 0);
    cr_assert_eq(mkfifo(fifo_gguf, 0666), 0);
    cr_assert_eq(symlink("/dev/zero", zero_gguf), 0);
    /* m1: the llama fixture with a FIFO tokenizer.json and config.json; m2: the same as
     * links to /dev/zero; model.safetensors a FIFO in m1 */
    snprintf(m1, sizeof m1, "%s/m1", dir);
    snprintf(m2, sizeof m2, "%s/m2", dir);
    cr_assert_eq(mkdir(m1, 0777), 0);
    cr_assert_eq(mkdir(m2, 0777), 0);
    static const char *const names[] = {"tokenizer.json", "config.json", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", m1, names[i]);
        cr_assert_eq(mkfifo(p, 0666), 0);
        snprintf(p, sizeof p, "%s/%s", m2, names[i]);
        cr_assert_eq(symlink("/dev/zero", p), 0);
    }
    const struct {
        const char *cmd, *model, *extra, *named;
    } cases[] = {
        {"tokenize", fifo, "hello", fifo},
        {"tokenize", "/dev/zero", "hello", "/dev/zero"},
        {"tokenize", m1, "hello", "m1/tokenizer.json"},
        {"tokenize", m2, "hello", "m2/tokenizer.json"},
        {"tokenize", LLAMA, "--file /dev/zero", "/dev/zero"},
        {"inspect", fifo_gguf, "", fifo_gguf},
        {"inspect", zero_gguf, "", zero_gguf},
        {"inspect", m1, "", "m1/config.json"},
        {"inspect", m2, "", "m2/config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = RUN_T(&log, "%s %s %s", cases[i].cmd, cases[i].model, cases[i].extra);
        cr_assert_eq(rc, 2, "%s %s %s: exit %d\n%s", cases[i].cmd, cases[i].model, cases[i].extra,
                     rc, log);
        cr_assert(strstr(log, cases[i].named), "%s %s: %s", cases[i].cmd, cases[i].model, log);
        free(log);
    }
    int rc = RUN_T(&log, "tokenize %s --file %s", LLAMA, fifo);
    cr_assert_eq(rc, 2, "exit %d\n%s", rc, log);
    cr_assert(strstr(log, fifo) && strstr(log, "FIFO"), "%s", log);
    free(log);
    rm_rf(dir);
}

Test(files, tokenize_file_that_is_a_directory_is_an_error) {
    char dir[64], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    cr_assert_eq(test_run(&log, "tokenize " LLAMA " --file %s", dir), 2, "%s", log);
    cr_assert(strstr(log, dir) && strstr(log, "directory"), "%s", log);
    free(log);
    rm_rf(dir);
}

Test(files, tokenize_invalid_utf8_error_names_the_file) {
    char dir[64], p[128], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/bad.txt", dir);
    put_file(p, "ok \xff then");
    cr_assert_eq(test_run(&log, "tokenize " LLAMA " --file %s", p), 2, "%s", log);
    char want[200];
    snprintf(want, sizeof want, "%s: invalid UTF-8 at byte 3", p);
    cr_assert(strstr(log, want), "%s", log);
    free(log);
    rm_rf(dir);
}

/* Endless stdin stops at the 1 GiB text cap. Reading a GiB under ASan takes long: normal builds
 * only. */
Test(files, tokenize_endless_stdin_stops_at_the_cap) {
    if (!TEST_CHECK_MEMORY) {
        fprintf(stderr, "SKIP: endless stdin (sanitizer build)\n");
        cr_skip_test("sanitizer build");
    }
    char *log = NULL;
    int   rc = test_run(&log, SH_PREFIX "timeout 60 %s tokenize " LLAMA " < /dev/zero", test_bin());
    cr_assert_eq(rc, 2, "exit %d\n%s", rc, log);
    cr_assert(strstr(log, "stdin: more than 1024 MiB"), "%s", log);
    free(log);
}

Test(files, tokenize_to_a_full_disk_says_why) {
    char *log = NULL;
    /* stdout to the device, stderr to the pipe test_run reads */
    int rc =
        test_run(&log, SH_PREFIX "{ %s tokenize " LLAMA " 'hello world' >/dev/full; }", test_bin());
    cr_assert_eq(rc, 2, "%s", log);
    cr_assert(strstr(log, "stdout") && strstr(log, "No space left on device"), "%s", log);
    free(log);
}
