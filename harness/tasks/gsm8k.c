/* harness/tasks/gsm8k.c — lm-eval 0.4.13's default `gsm8k` task (tasks/gsm8k/gsm8k.yaml, version
 * 3.0) as a generation spec (user_gen.c's format): "Question: {question}\nAnswer:", the whole
 * worked answer as target, 5 examples drawn from train with lm-eval's sampler, until "Question:",
 * "</s>", "<|im_end|>", 256 new tokens, the strict-match and flexible-extract filters and
 * exact_match with ignore_case and its regexes_to_ignore. */
#include <string.h>

#include "harness/tasks/tasks.h"

const char gsm8k_spec[] =
    "{\"task\": \"gsm8k\", \"output_type\": \"generate_until\", \"data\": \"gsm8k/test.jsonl\","
    " \"fewshot_data\": \"gsm8k/train.jsonl\", \"prompt\": \"Question: {question}\\nAnswer:\","
    " \"target\": \"{answer}\", \"num_fewshot\": 5,"
    " \"until\": [\"Question:\", \"</s>\", \"<|im_end|>\"], \"max_gen_toks\": 256,"
    " \"filter_list\": ["
    "  {\"name\": \"strict-match\", \"filter\": [{\"function\": \"regex\", \"regex_pattern\":"
    "   \"#### (\\\\-?[0-9\\\\.\\\\,]+)\"}, {\"function\": \"take_first\"}]},"
    "  {\"name\": \"flexible-extract\", \"filter\": [{\"function\": \"regex\", \"group_select\": "
    "-1,"
    "   \"regex_pattern\": \"(-?[$0-9.,]{2,})|(-?[0-9]+)\"}, {\"function\": \"take_first\"}]}],"
    " \"metric_list\": [{\"metric\": \"exact_match\", \"ignore_case\": true,"
    "  \"ignore_punctuation\": false,"
    "  \"regexes_to_ignore\": [\",\", \"\\\\$\", \"(?s).*#### \", \"\\\\.$\"]}]}";

int task_gsm8k_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    return task_gen_load(t, gsm8k_spec, strlen(gsm8k_spec), "gsm8k", 1, o, err);
}
