/* harness/cmd_split.c — `assay split`: train/val/test splits of a JSONL file decided by a hash of
 * one field, so a record's split depends on its own key and the seed only: adding, removing or
 * reordering other records never moves it, and records that share a key stay together. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/sha256.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/jsonl.h"

#define SPLIT_MAX 16

static const char split_help[] =
    "usage: assay split FILE.jsonl --by FIELD --ratios R1,R2[,...] [--names N1,N2[,...]]\n"
    "                   [--out-dir D] [--seed S] [--json]\n"
    "\n"
    "Splits the records of FILE.jsonl by a hash of FIELD. The hash is SHA-256 over the seed\n"
    "text, one 0x00 byte, then the field's value: a string's UTF-8 bytes, any other value's\n"
    "compact JSON text (12, true, [1,2]). Its first 8 bytes, read big-endian and divided by\n"
    "2^64, give u in [0, 1); the record goes to the first split whose cumulative ratio is\n"
    "above u. So a record's split never changes when other records are added or removed, and\n"
    "records with equal keys land together.\n"
    "\n"
    "options:\n"
    "  --by FIELD        the key field (required; every record must have it)\n"
    "  --ratios R,...    2 to 16 positive shares, scaled to sum to 1 (e.g. 0.8,0.1,0.1)\n"
    "  --names N,...     split names (default train,test for 2 ratios, train,val,test for 3,\n"
    "                    else split0, split1, ...)\n"
    "  --out-dir D       where D/<stem>.<name>.jsonl are written (default: FILE's folder);\n"
    "                    each output is complete or absent (temporary file + rename)\n"
    "  --seed S          any text (default 0): another seed draws another split\n"
    "  --json            print a JSON summary (splits, paths, record counts)\n"
    "\n"
    "Records are written as compact JSON, in input order. Blank lines are skipped.\n"
    "exit codes: 0 success, 2 bad usage or input (messages name file:line)\n";

/* Splits "a,b,c" into at most SPLIT_MAX parts (in buf, which it modifies). */
static int split_list(char *buf, char **parts, const char *opt, assay_error *err) {
    int n = 0;
    for (char *s = buf, *save = NULL, *t; (t = strtok_r(s, ",", &save)); s = NULL) {
        if (n == SPLIT_MAX)
            return assay_fail(err, ASSAY_EINVAL, "%s: at most %d values", opt, SPLIT_MAX);
        parts[n++] = t;
    }
    return n;
}

/* u in [0, 1) from the seed and the key's bytes. */
static double split_unit(const char *seed, const char *key, size_t len) {
    sha256_ctx c;
    char       hex[65];
    sha256_init(&c);
    sha256_update(&c, seed, strlen(seed) + 1); /* the NUL is the separator */
    sha256_update(&c, key, len);
    sha256_hex(&c, hex);
    uint64_t v = 0;
    for (int i = 0; i < 16; i++)
        v = v << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    return (double)(v >> 11) / 9007199254740992.0; /* top 53 bits: exact in a double */
}

int cmd_split(int argc, char **argv) {
    cli_common   cc  = {0};
    assay_error  err = {0};
    const char  *by = NULL, *ratios_s = NULL, *names_s = NULL, *out_dir = NULL, *seed = "0";
    const char  *input = NULL;
    jsonl_reader rd    = {0};
    atomic_file  af[SPLIT_MAX];
    int          n_open = 0, rc = ASSAY_OK, n = 0;
    char         rbuf[1024] = "", nbuf[1024] = "", paths[SPLIT_MAX][4200];
    char        *rparts[SPLIT_MAX], *nparts[SPLIT_MAX];
    double       cum[SPLIT_MAX];
    int64_t      counts[SPLIT_MAX] = {0};
    memset(af, 0, sizeof af);

    const cli_opt opts[] = {
        {"--by", CLI_STR, &by, 0, 0, NULL},         {"--ratios", CLI_STR, &ratios_s, 0, 0, NULL},
        {"--names", CLI_STR, &names_s, 0, 0, NULL}, {"--out-dir", CLI_STR, &out_dir, 0, 0, NULL},
        {"--seed", CLI_STR, &seed, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"split", opts, CLI_N_OPTS(opts), 1, "(one input FILE.jsonl)"};
    cli_list      args = {&input, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        return cli_report(&err);
    if (r > 0) {
        fputs(split_help, stdout);
        return 0;
    }
    if (!input || !by || !ratios_s) {
        fprintf(stderr, "assay: split: missing %s (see assay split --help)\n",
                !input ? "FILE.jsonl"
                : !by  ? "--by FIELD"
                       : "--ratios");
        return 2;
    }
    if (strlen(ratios_s) >= sizeof rbuf || (names_s && strlen(names_s) >= sizeof nbuf)) {
        assay_fail(&err, ASSAY_EINVAL, "split: --ratios or --names is too long");
        goto fail;
    }
    snprintf(rbuf, sizeof rbuf, "%s", ratios_s);
    if ((n = split_list(rbuf, rparts, "--ratios", &err)) < 0)
        goto fail;
    if (n < 2) {
        assay_fail(&err, ASSAY_EINVAL, "--ratios: expected 2 to %d shares, got %d", SPLIT_MAX, n);
        goto fail;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        char  *end = NULL;
        double v   = strtod(rparts[i], &end);
        if (!end || *end || !(v > 0) || !isfinite(v)) {
            assay_fail(&err, ASSAY_EINVAL, "--ratios: '%s' is not a positive number", rparts[i]);
            goto fail;
        }
        sum += v;
        cum[i] = sum;
    }
    for (int i = 0; i < n; i++)
        cum[i] /= sum;
    cum[n - 1]                     = 1.0; /* u < 1 always lands somewhere despite rounding */
    static const char *const two[] = {"train", "test"}, *const three[] = {"train", "val", "test"};
    char gen[SPLIT_MAX][24];
    for (int i = 0; i < n; i++) {
        snprintf(gen[i], sizeof gen[i], "split%d", i);
        nparts[i] = n == 2 ? (char *)two[i] : n == 3 ? (char *)three[i] : gen[i];
    }
    if (names_s) {
        snprintf(nbuf, sizeof nbuf, "%s", names_s);
        int nn = split_list(nbuf, nparts, "--names", &err);
        if (nn < 0)
            goto fail;
        if (nn != n) {
            assay_fail(&err, ASSAY_EINVAL, "--names gives %d names for %d ratios", nn, n);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            int bad = strchr(nparts[i], '/') != NULL;
            for (int j = 0; j < i; j++)
                bad |= !strcmp(nparts[i], nparts[j]);
            if (bad) {
                assay_fail(&err, ASSAY_EINVAL, "--names: '%s' is repeated or holds a '/'",
                           nparts[i]);
                goto fail;
            }
        }
    }

    /* outputs: <out-dir>/<stem>.<name>.jsonl */
    const char *slash = strrchr(input, '/');
    const char *base  = slash ? slash + 1 : input;
    size_t      stem  = strlen(base) - (str_ends_with(base, ".jsonl") ? 6 : 0);
    char        dir[4096];
    if (out_dir)
        snprintf(dir, sizeof dir, "%s", out_dir);
    else if (slash)
        snprintf(dir, sizeof dir, "%.*s", slash == input ? 1 : (int)(slash - input), input);
    else
        snprintf(dir, sizeof dir, ".");
    /* the input is named first when it is the one that is missing */
    if ((rc = jsonl_open(&rd, input, &err)))
        goto fail;
    if (!path_is_dir(dir)) {
        assay_fail(&err, ASSAY_EINVAL, "%s: not a directory (--out-dir)", dir);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%.*s.%s.jsonl", dir, (int)stem, base, nparts[i]);
        if (!strcmp(paths[i], input)) {
            assay_fail(&err, ASSAY_EINVAL, "%s: an output would replace the input", paths[i]);
            goto fail;
        }
        if ((rc = atomic_open(&af[i], paths[i], &err)))
            goto fail;
        n_open++;
    }

    cJSON *obj;
    int    got;
    while ((got = jsonl_next(&rd, &obj, &err)) == 1) {
        const cJSON *v   = cJSON_GetObjectItemCaseSensitive(obj, by);
        const char  *key = NULL;
        char        *txt = NULL;
        size_t       len = 0;
        if (!v || cJSON_IsNull(v))
            rc = assay_fail(&err, ASSAY_EFORMAT, "%s:%zu: no \"%s\" field (the --by key)", input,
                            rd.line, by);
        else if (cJSON_IsString(v))
            rc = jsonl_get_string(&rd, obj, by, 1, &key, &len, &err);
        else if (!(txt = jsonl_print(v, 0)))
            rc = assay_fail(&err, ASSAY_ENOMEM, "%s:%zu: out of memory", input, rd.line);
        else
            key = txt, len = strlen(txt);
        int k = 0;
        if (!rc) {
            double u = split_unit(seed, key, len);
            while (k < n - 1 && u >= cum[k])
                k++;
        }
        free(txt);
        char *line = rc ? NULL : jsonl_print(obj, 0);
        cJSON_Delete(obj);
        if (rc)
            goto fail;
        if (!line || fprintf(af[k].fp, "%s\n", line) < 0) {
            free(line);
            assay_fail(&err, ASSAY_EIO, "%s: write failed", paths[k]);
            goto fail;
        }
        free(line);
        counts[k]++;
    }
    if (got != 0) {
        rc = got;
        goto fail;
    }
    for (int i = 0; i < n; i++) /* commit clears fp; the rest are aborted on failure */
        if ((rc = atomic_commit(&af[i], &err)))
            goto fail;
    jsonl_close(&rd);
    if (cc.json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "splits");
        cJSON_AddStringToObject(root, "input", input);
        cJSON_AddStringToObject(root, "by", by);
        cJSON_AddStringToObject(root, "seed", seed);
        for (int i = 0; i < n; i++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "name", nparts[i]);
            cJSON_AddNumberToObject(s, "ratio", cum[i] - (i ? cum[i - 1] : 0));
            cJSON_AddStringToObject(s, "path", paths[i]);
            cJSON_AddNumberToObject(s, "records", (double)counts[i]);
            cJSON_AddItemToArray(arr, s);
        }
        char *s = cJSON_Print(root);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else
        for (int i = 0; i < n; i++)
            printf("%-10s %8lld records  %s\n", nparts[i], (long long)counts[i], paths[i]);
    return 0;
fail:
    for (int i = 0; i < n_open; i++)
        atomic_abort(&af[i]);
    jsonl_close(&rd);
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    return cli_report(&err);
}
