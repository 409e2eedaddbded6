/* fuzz/replay.c — runs a libFuzzer entry point over every file in the given directories, so the
 * committed corpus is replayed by `make test` without clang. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    int n = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "replay: cannot open corpus %s\n", argv[a]);
            return 2;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            if (path_join(path, sizeof path, argv[a], e->d_name))
                continue;
            char       *buf = NULL;
            size_t      len = 0;
            assay_error err;
            if (file_read_all(path, &buf, &len, &err)) {
                fprintf(stderr, "replay: %s\n", err.msg);
                closedir(d);
                return 2;
            }
            LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
            free(buf);
            n++;
        }
        closedir(d);
    }
    printf("replay %s: %d inputs, no crash\n", argc > 1 ? argv[1] : "", n);
    return 0;
}
