/* harness/cmd_history.c — `assay history`: the runs recorded in a history file, grouped per task
 * and metric in the order they ran, each value with its change from the run before (a trend). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/history.h"

static const char history_help[] =
    "usage: assay history [--history FILE] [--task T] [--model M] [--json]\n"
    "\n"
    "Lists what eval, ppl, judge and bench recorded in a history file (SQLite), per task and\n"
    "metric in the order the runs were made, each value with its stderr and its change from\n"
    "the previous run of that task and metric (delta, in the metric's own units).\n"
    "\n"
    "options:\n"
    "  --history FILE   the history file (default: $ASSAY_HISTORY)\n"
    "  --task T         only task T\n"
    "  --model M        only runs whose model path, or model hash, equals or starts with M\n"
    "  --json           one JSON object: {\"history\", \"trends\": [{\"task\", \"metric\",\n"
    "                   \"points\": [{run_id, time_utc, command, model, model_sha256, device,\n"
    "                   assay_version, value, stderr, delta, wall_s, tokens, cost}]}]}\n"
    "  --help           this text\n"
    "\n"
    "exit codes: 0 success, 2 bad usage, a missing file, or a file that is not an assay\n"
    "history\n";

static cJSON *num_or_null(double v) {
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *history_json(const char *path, const history_rows *rows) {
    cJSON *root = cJSON_CreateObject(), *trends = cJSON_CreateArray(), *pts = NULL;
    cJSON_AddStringToObject(root, "history", path);
    for (size_t i = 0; i < rows->n; i++) {
        const history_row *r     = &rows->r[i];
        int                first = i == 0 || strcmp(r->task, rows->r[i - 1].task) ||
                    strcmp(r->metric, rows->r[i - 1].metric);
        if (first) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "task", r->task);
            cJSON_AddStringToObject(t, "metric", r->metric);
            pts = cJSON_AddArrayToObject(t, "points");
            cJSON_AddItemToArray(trends, t);
        }
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "run_id", (double)r->run_id);
        cJSON_AddStringToObject(p, "time_utc", r->time_utc);
        cJSON_AddStringToObject(p, "command", r->command);
        cJSON_AddStringToObject(p, "model", r->model);
        cJSON_AddStringToObject(p, "model_sha256", r->model_sha256);
        cJSON_AddStringToObject(p, "device", r->device);
        cJSON_AddStringToObject(p, "assay_version", r->version);
        cJSON_AddItemToObject(p, "value", num_or_null(r->value));
        cJSON_AddItemToObject(p, "stderr", num_or_null(r->stderr));
        cJSON_AddItemToObject(
            p, "delta", first ? cJSON_CreateNull() : num_or_null(r->value - rows->r[i - 1].value));
        cJSON_AddItemToObject(p, "wall_s", num_or_null(r->wall_s));
        cJSON_AddItemToObject(p, "tokens",
                              r->tokens >= 0 ? cJSON_CreateNumber((double)r->tokens)
                                             : cJSON_CreateNull());
        cJSON_AddItemToObject(p, "cost", num_or_null(r->cost));
        cJSON_AddItemToArray(pts, p);
    }
    cJSON_AddItemToObject(root, "trends", trends);
    return root;
}

static void history_print(const history_rows *rows) {
    for (size_t i = 0; i < rows->n; i++) {
        const history_row *r     = &rows->r[i];
        int                first = i == 0 || strcmp(r->task, rows->r[i - 1].task) ||
                    strcmp(r->metric, rows->r[i - 1].metric);
        if (first)
            printf("%s%s / %s\n  %5s  %-20s  %-7s  %-12s  %-8s  %12s  %10s  %10s\n", i ? "\n" : "",
                   r->task, r->metric, "run", "time (UTC)", "command", "model", "device", "value",
                   "stderr", "delta");
        size_t ml     = strlen(r->model);
        char   se[32] = "N/A", dl[32] = "";
        if (isfinite(r->stderr))
            snprintf(se, sizeof se, "%.6g", r->stderr);
        if (!first)
            snprintf(dl, sizeof dl, "%+.6g", r->value - rows->r[i - 1].value);
        printf("  %5lld  %-20s  %-7s  %-12s  %-8s  %12.6g  %10s  %10s\n", (long long)r->run_id,
               r->time_utc, r->command, ml > 12 ? r->model + ml - 12 : r->model, r->device,
               r->value, se, dl);
    }
}

int cmd_history(int argc, char **argv) {
    cli_common    cc   = {0};
    assay_error   err  = {0};
    const char   *path = NULL, *task = NULL, *model = NULL;
    history_rows  rows   = {0};
    const cli_opt opts[] = {
        {"--history", CLI_STR, &path, 0, 0, NULL},
        {"--task", CLI_STR, &task, 0, 0, NULL},
        {"--model", CLI_STR, &model, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"history", opts, CLI_N_OPTS(opts), -1, "(history takes options only)"};
    cli_list      none = {NULL, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &none, &err);
    if (r < 0)
        return cli_report(&err);
    if (r > 0) {
        fputs(history_help, stdout);
        return 0;
    }
    if (!path)
        path = getenv("ASSAY_HISTORY");
    if (!path || !*path) {
        fprintf(stderr, "assay: history: no history file (give --history FILE or set "
                        "ASSAY_HISTORY)\n");
        return 2;
    }
    if ((r = history_query(path, task, model, &rows, &err)))
        return cli_report(&err);
    if (cc.json) {
        cJSON *root = history_json(path, &rows);
        char  *s    = root ? cJSON_Print(root) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else if (rows.n == 0)
        printf("%s: no runs%s\n", path, task || model ? " match" : " recorded");
    else
        history_print(&rows);
    history_rows_free(&rows);
    return 0;
}
