#include "loader/modeldir.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

int model_path_is_gguf(const char *path) {
    assay_error e;
    int         fd = file_open_regular(path, NULL, &e);
    if (fd < 0)
        return 0;
    char    m[4];
    ssize_t n = read(fd, m, 4);
    close(fd);
    /* a damaged file named .gguf goes to the GGUF reader too, whose message says what is wrong */
    return (n == 4 && !memcmp(m, "GGUF", 4)) || str_ends_with(path, ".gguf");
}

int model_dir_check(const char *path, assay_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return assay_fail(err, ASSAY_EIO,
                          "%s: %s (expected a model directory with config.json, "
                          "*.safetensors and tokenizer.json, or a .gguf file)",
                          path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return ASSAY_OK;
    if (S_ISREG(st.st_mode) && model_path_is_gguf(path))
        return ASSAY_OK;
    if (S_ISREG(st.st_mode) && str_ends_with(path, ".safetensors"))
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: this is a weights file; pass the directory that holds it with "
                          "config.json and tokenizer.json",
                          path);
    return assay_fail(err, ASSAY_EINVAL,
                      "%s: not a directory or a GGUF file (expected a model directory with "
                      "config.json, *.safetensors and tokenizer.json, or a .gguf file)",
                      path);
}
