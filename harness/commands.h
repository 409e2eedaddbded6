/* harness/commands.h — the CLI subcommands. Each returns the process exit code:
 * 0 success, 1 a gate failed, 2 bad input or usage, 3 environment failure. argv[0] is the
 * subcommand name. */
#ifndef ASSAY_COMMANDS_H
#define ASSAY_COMMANDS_H

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_judge(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_split(int argc, char **argv);
int cmd_contamination(int argc, char **argv);

#define ASSAY_VERSION "0.1.0"

/* Prints "assay: <msg>" to stderr and returns the exit code for err->code. */
struct assay_error;
int cli_report(const struct assay_error *err);

#endif
