/* Pure scoring pieces: window plans, perplexity arithmetic, lm-eval's context/continuation split,
 * stop strings, and the JSONL reader's messages. */
#include <math.h>
#include <stdint.h>

#include "harness/cli_common.h"
#include "harness/jsonl.h"
#include "scoring/loglik.h"
#include "scoring/ppl.h"
#include "scoring/stop.h"
#include "scoring/windows.h"
#include "tests/helpers.h"

/* ---- windows ---------------------------------------------------------------------------- */

static void expect_span(const win_span *w, size_t start, size_t end, int prefix, size_t from) {
    cr_expect_eq(w->start, start, "start %zu != %zu", w->start, start);
    cr_expect_eq(w->end, end, "end %zu != %zu", w->end, end);
    cr_expect_eq(w->prefix, prefix);
    cr_expect_eq(w->score_from, from, "score_from %zu != %zu", w->score_from, from);
}

Test(windows, sliding_with_overlap_scores_each_token_after_the_first_once) {
    /* n=10, max_length=4, stride=2 by hand from the HF loop: windows [0,4) [2,6) [4,8) [6,10);
     * trg_len 4,2,2,2; the first window's label shift drops t0. */
    win_plan p = {0};
    cr_assert_eq(win_plan_sliding(&p, 10, 4, 2, NULL), 0);
    cr_assert_eq(p.n, 4);
    expect_span(&p.spans[0], 0, 4, 0, 1);
    expect_span(&p.spans[1], 2, 6, 0, 2);
    expect_span(&p.spans[2], 4, 8, 0, 2);
    expect_span(&p.spans[3], 6, 10, 0, 2);
    size_t scored = 0, hf = 0;
    for (size_t i = 0; i < p.n; i++)
        scored += win_scored(&p.spans[i]), hf += p.spans[i].hf_count;
    cr_expect_eq(scored, 9);
    /* the recipe's num_valid_tokens - 1 per window: 3 + 1 + 1 + 1 */
    cr_expect_eq(hf, 6);
    win_plan_free(&p);
}

Test(windows, sliding_without_overlap_drops_the_first_token_of_every_window) {
    /* stride == max_length: trg_len == window length, so the label shift drops each window's
     * first token (t4 and t8 are never scored), as HF's recipe does. */
    win_plan p = {0};
    cr_assert_eq(win_plan_sliding(&p, 10, 4, 4, NULL), 0);
    cr_assert_eq(p.n, 3);
    expect_span(&p.spans[0], 0, 4, 0, 1);
    expect_span(&p.spans[1], 4, 8, 0, 1);
    expect_span(&p.spans[2], 8, 10, 0, 1);
    cr_expect_eq(win_scored(&p.spans[0]) + win_scored(&p.spans[1]) + win_scored(&p.spans[2]), 7);
    win_plan_free(&p);
}

Test(windows, sliding_short_document_is_one_window) {
    win_plan p = {0};
    cr_assert_eq(win_plan_sliding(&p, 5, 8, 8, NULL), 0);
    cr_assert_eq(p.n, 1);
    expect_span(&p.spans[0], 0, 5, 0, 1);
    win_plan_free(&p);
}

Test(windows, sliding_rejects_bad_arguments_with_a_reason) {
    win_plan    p = {0};
    assay_error err;
    cr_expect_eq(win_plan_sliding(&p, 1, 4, 4, &err), ASSAY_EINVAL);
    cr_expect(strstr(err.msg, "at least 2"), "%s", err.msg);
    cr_expect_eq(win_plan_sliding(&p, 10, 4, 5, &err), ASSAY_EINVAL);
    cr_expect(strstr(err.msg, "stride"), "%s", err.msg);
    cr_expect_eq(p.n, 0);
    win_plan_free(&p);
}

Test(windows, rolling_matches_lm_eval_by_hand) {
    /* get_rolling_token_windows(t[0..10), P, max_seq_len=4, context_len=1) + make_disjoint_window:
     *   ([P], t0..t3), ([t3], t4..t7), ([t5 t6 t7], t8 t9) */
    win_plan p = {0};
    cr_assert_eq(win_plan_rolling(&p, 10, 4, 1, NULL), 0);
    cr_assert_eq(p.n, 3);
    expect_span(&p.spans[0], 0, 4, 1, 1);
    expect_span(&p.spans[1], 3, 8, 0, 1);
    expect_span(&p.spans[2], 5, 10, 0, 3);
    int32_t t[10], buf[8];
    for (int i = 0; i < 10; i++)
        t[i] = 100 + i;
    win_fill_tokens(buf, &p.spans[0], t, 7);
    cr_expect_eq(buf[0], 7);
    cr_expect_eq(buf[1], 100);
    cr_expect_eq(buf[4], 103);
    win_fill_tokens(buf, &p.spans[2], t, 7);
    cr_expect_eq(buf[0], 105);
    cr_expect_eq(buf[3], 108);
    win_plan_free(&p);
}

Test(windows, rolling_docstring_example_with_context_len_2) {
    /* lm-eval's docstring: tokens 0..8, max_seq_len 3, context_len 2 -> predictions
     * 0 1 2 | 3 4 | 5 6 | 7 8, each later window reading max_seq_len tokens before its end. */
    win_plan p = {0};
    cr_assert_eq(win_plan_rolling(&p, 9, 3, 2, NULL), 0);
    cr_assert_eq(p.n, 4);
    expect_span(&p.spans[0], 0, 3, 1, 1);
    expect_span(&p.spans[1], 1, 5, 0, 2); /* input 1 2 3 made disjoint: 1 2 | 3 4 */
    expect_span(&p.spans[2], 3, 7, 0, 2);
    expect_span(&p.spans[3], 5, 9, 0, 2);
    win_plan_free(&p);
}

Test(windows, every_plan_covers_the_document_once_within_the_context) {
    for (size_t n = 1; n < 40; n++)
        for (size_t max = 2; max < 12; max++) {
            win_plan r = {0};
            cr_assert_eq(win_plan_rolling(&r, n, max, 1, NULL), 0);
            char seen[64] = {0};
            for (size_t i = 0; i < r.n; i++) {
                const win_span *w = &r.spans[i];
                cr_assert_leq(win_len(w), max + 1);
                cr_assert_geq(w->score_from, 1);
                for (size_t k = w->score_from; k < win_len(w); k++)
                    seen[w->start + k - (w->prefix ? 1 : 0)]++;
            }
            for (size_t k = 0; k < n; k++)
                cr_assert_eq(seen[k], 1, "rolling n=%zu max=%zu token %zu scored %d times", n, max,
                             k, seen[k]);
            win_plan_free(&r);
            for (size_t stride = 1; stride <= max && n >= 2; stride++) {
                win_plan s = {0};
                cr_assert_eq(win_plan_sliding(&s, n, max, stride, NULL), 0);
                memset(seen, 0, sizeof seen);
                for (size_t i = 0; i < s.n; i++) {
                    const win_span *w = &s.spans[i];
                    cr_assert_leq(win_len(w), max);
                    for (size_t k = w->score_from; k < win_len(w); k++)
                        seen[w->start + k]++;
                }
                cr_assert_eq(seen[0], 0);
                for (size_t k = 1; k < n; k++)
                    cr_assert_leq(seen[k], 1);
                if (stride < max) /* overlapping windows score every token after the first */
                    for (size_t k = 1; k < n; k++)
                        cr_assert_eq(seen[k], 1, "n=%zu max=%zu stride=%zu token %zu", n, max,
                                     stride, k);
                win_plan_free(&s);
            }
        }
}

/* ---- perplexity arithmetic ---------------------------------------------------------------- */

Test(ppl, words_are_counted_as_python_re_split_on_whitespace) {
    /* Expected values are Python's len(re.split(r"\s+", s)). */
    cr_expect_eq(ppl_count_words("", 0), 1);
    cr_expect_eq(ppl_count_words("a b", 3), 2);
    cr_expect_eq(ppl_count_words(" a  b\n", 6), 4);
    cr_expect_eq(ppl_count_words("a\xc2\xa0"
                                 "b",
                                 4),
                 2); /* NBSP is \s */
    cr_expect_eq(ppl_count_words("a\xe2\x80\x8b"
                                 "b",
                                 5),
                 1); /* ZWSP is not */
    cr_expect_eq(ppl_count_words("a\x1c"
                                 "b",
                                 3),
                 2); /* FS is str.isspace() */
    cr_expect_eq(ppl_count_words("a\xc2\x85"
                                 "b\xe3\x80\x80"
                                 "c",
                                 8),
                 3);
}

Test(ppl, aggregates_follow_the_definitions) {
    ppl_stats s;
    ppl_stats_init(&s, "ab cd\n", 6);
    cr_assert_eq(s.words, 3);
    cr_assert_eq(s.bytes, 6);
    ppl_stats_add_window(&s, 6.0, 3, 3);
    ppl_stats_add_window(&s, 3.0, 2, 1);
    cr_assert_eq(s.tokens, 5);
    cr_expect(fabs(ppl_token_ppl(&s) - exp(9.0 / 5)) < 1e-12);
    cr_expect(fabs(ppl_word_ppl(&s) - exp(9.0 / 3)) < 1e-12);
    cr_expect(fabs(ppl_byte_ppl(&s) - exp(9.0 / 6)) < 1e-12);
    cr_expect(fabs(ppl_bits_per_byte(&s) - 9.0 / 6 / log(2.0)) < 1e-12);
    /* HF recipe: mean 2.0 * 3 + mean 1.5 * 1 over 4 counted tokens */
    cr_expect(fabs(ppl_hf_recipe_ppl(&s) - exp(7.5 / 4)) < 1e-12);
    ppl_stats t = {0};
    ppl_stats_merge(&t, &s);
    ppl_stats_merge(&t, &s);
    cr_expect_eq(t.words, 6);
    cr_expect(fabs(ppl_word_ppl(&t) - exp(18.0 / 6)) < 1e-12); /* weighted, not a mean of ppls */
}

/* ---- lm-eval context/continuation split ------------------------------------------------- */

/* A fake GPT-2-like tokenizer: a piece is a run of non-spaces with the spaces before it attached
 * (" cat"), trailing spaces are their own piece; ids come from a small interning table. */
static const char *fake_pieces[64];
static size_t      fake_n;
static int32_t     fake_id(const char *s, size_t n) {
        for (size_t i = 0; i < fake_n; i++)
        if (strlen(fake_pieces[i]) == n && !memcmp(fake_pieces[i], s, n))
            return (int32_t)(i + 10);
    cr_assert_lt(fake_n, 64);
        fake_pieces[fake_n] = strndup(s, n);
        return (int32_t)(10 + fake_n++);
}
static int fake_encode(void *ctx, const char *text, size_t len, tok_ids *out, assay_error *err) {
    (void)ctx;
    (void)err;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] == ' ')
            j++;
        while (j < len && text[j] != ' ')
            j++;
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 8;
            out->ids = realloc(out->ids, out->cap * sizeof *out->ids);
        }
        out->ids[out->n++] = fake_id(text + i, j - i);
        i                  = j;
    }
    return 0;
}

Test(loglik, trailing_space_of_the_context_moves_to_the_continuation) {
    tok_ids c = {0}, k = {0};
    cr_assert_eq(loglik_encode_pair(fake_encode, NULL, "Q: hi ", 6, "there", 5, 1, &c, &k, NULL),
                 0);
    /* context "Q: hi" -> [Q:, " hi"], continuation " there" -> [" there"] */
    cr_assert_eq(c.n, 2);
    cr_assert_eq(k.n, 1);
    cr_expect_eq(k.ids[0], fake_id(" there", 6));
    cr_expect_eq(c.ids[1], fake_id(" hi", 3));
    tok_ids_free(&c);
    tok_ids_free(&k);
}

Test(loglik, continuation_is_the_tail_of_the_whole_encoding) {
    tok_ids c = {0}, k = {0};
    cr_assert_eq(loglik_encode_pair(fake_encode, NULL, "a b", 3, " c d", 4, 1, &c, &k, NULL), 0);
    cr_assert_eq(c.n, 2);
    cr_assert_eq(k.n, 2);
    cr_expect_eq(k.ids[0], fake_id(" c", 2));
    cr_expect_eq(k.ids[1], fake_id(" d", 2));
    tok_ids_free(&c);
    tok_ids_free(&k);
}

Test(loglik, empty_context_uses_the_prefix_token) {
    tok_ids c = {0}, k = {0};
    cr_assert_eq(loglik_encode_pair(fake_encode, NULL, "", 0, "x y", 3, 1, &c, &k, NULL), 0);
    cr_assert_eq(c.n, 1);
    cr_expect_eq(c.ids[0], 1);
    cr_expect_eq(k.n, 2);
    /* when the continuation already starts with the prefix token, that token is the context */
    int32_t x = fake_id("x", 1);
    cr_assert_eq(loglik_encode_pair(fake_encode, NULL, "", 0, "x y", 3, x, &c, &k, NULL), 0);
    cr_expect_eq(c.n, 1);
    cr_expect_eq(c.ids[0], x);
    cr_expect_eq(k.n, 1);
    tok_ids_free(&c);
    tok_ids_free(&k);
}

Test(loglik, requests_are_truncated_from_the_left_to_the_model_length) {
    int32_t ctx[10], cont[2] = {11, 12}, *tok = NULL;
    for (int i = 0; i < 10; i++)
        ctx[i] = i + 1;
    size_t n, from;
    cr_assert_eq(loglik_build_request(ctx, 10, cont, 2, 5, "r", &tok, &n, &from, NULL), 0);
    /* the last max_len + 1 = 6 tokens: 7 8 9 10 | 11 12 */
    cr_assert_eq(n, 6);
    cr_assert_eq(from, 4);
    cr_expect_eq(tok[0], 7);
    cr_expect_eq(tok[5], 12);
    free(tok);
    assay_error err;
    cr_expect_eq(loglik_build_request(ctx, 10, cont, 0, 5, "req.jsonl:3", &tok, &n, &from, &err),
                 ASSAY_EINVAL);
    cr_expect(strstr(err.msg, "req.jsonl:3"), "%s", err.msg);
    cr_expect_eq(loglik_build_request(ctx, 1, ctx, 6, 5, "req.jsonl:4", &tok, &n, &from, &err),
                 ASSAY_EINVAL);
    cr_expect(strstr(err.msg, "context is 5"), "%s", err.msg);
}

/* ---- stop strings ------------------------------------------------------------------------- */

Test(stop, finds_a_stop_string_split_across_three_pieces) {
    const char  *stops[] = {"</answer>"};
    stop_matcher m;
    cr_assert_eq(stop_init(&m, stops, NULL, 1, NULL), 0);
    cr_expect_eq(stop_feed(&m, "42</an", 6, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 2); /* "</an" might still become the stop string */
    cr_expect_eq(stop_feed(&m, "sw", 2, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 2);
    cr_expect_eq(stop_feed(&m, "er> tail", 8, NULL), 1);
    size_t      len;
    const char *t = stop_text(&m, &len);
    cr_expect_eq(len, 2);
    cr_expect(!strncmp(t, "42", 2));
    cr_expect_eq(stop_which(&m), 0);
    stop_free(&m);
}

Test(stop, earliest_occurrence_wins_and_shorter_stops_are_not_hidden) {
    const char  *stops[] = {"abcdef", "x", ""};
    stop_matcher m;
    cr_assert_eq(stop_init(&m, stops, NULL, 3, NULL), 0);
    cr_expect_eq(stop_feed(&m, "ab", 2, NULL), 0);
    cr_expect_eq(stop_feed(&m, "x", 1, NULL), 1);
    size_t len;
    stop_text(&m, &len);
    cr_expect_eq(len, 2);
    cr_expect_eq(stop_which(&m), 1);
    stop_free(&m);
}

Test(stop, text_without_stops_is_all_final) {
    const char  *stops[] = {"\n\n"};
    stop_matcher m;
    cr_assert_eq(stop_init(&m, stops, NULL, 1, NULL), 0);
    cr_expect_eq(stop_feed(&m, "hello", 5, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 5);
    cr_expect_eq(stop_feed(&m, "\n", 1, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 5);
    cr_expect_eq(stop_feed(&m, "x\n", 2, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 7); /* "hello\nx" final, "\n" held */
    cr_expect_eq(stop_feed(&m, "\ny", 2, NULL), 1);
    size_t len;
    stop_text(&m, &len);
    cr_expect_eq(len, 7);
    stop_free(&m);
}

Test(stop, stop_strings_with_nul_bytes_match_by_their_length) {
    const char  *stops[] = {"a\0b"};
    const size_t lens[]  = {3};
    stop_matcher m;
    cr_assert_eq(stop_init(&m, stops, lens, 1, NULL), 0);
    cr_expect_eq(stop_feed(&m, "xa\0c", 4, NULL), 0); /* "a" alone is not the stop string */
    cr_expect_eq(stop_feed(&m, "a", 1, NULL), 0);
    cr_expect_eq(stop_final_len(&m), 4); /* the trailing "a" may start it */
    cr_expect_eq(stop_feed(&m, "\0b!", 3, NULL), 1);
    size_t      len;
    const char *t = stop_text(&m, &len);
    cr_expect_eq(len, 4);
    cr_expect(!memcmp(t, "xa\0c", 4));
    stop_free(&m);
}

/* ---- JSONL reader ------------------------------------------------------------------------ */

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite(data, 1, n, f);
    fclose(f);
}

Test(jsonl, skips_blank_lines_tolerates_crlf_and_names_file_and_line) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/prompts.jsonl", dir);
    const char data[] = "{\"text\": \"a\"}\r\n\n   \r\n{\"text\": 5}\n{\"text\":\n[1]\n";
    write_file(path, data, sizeof data - 1);
    jsonl_reader r;
    assay_error  err;
    cJSON       *o = NULL;
    const char  *s;
    size_t       n;
    cr_assert_eq(jsonl_open(&r, path, &err), 0);
    cr_assert_eq(jsonl_next(&r, &o, &err), 1);
    cr_assert_eq(jsonl_get_string(&r, o, "text", 1, &s, &n, &err), 0);
    cr_expect_str_eq(s, "a");
    cJSON_Delete(o);
    cr_assert_eq(jsonl_next(&r, &o, &err), 1);
    cr_expect_eq(jsonl_get_string(&r, o, "text", 1, &s, &n, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "prompts.jsonl:4: field 'text' must be a string"), "%s", err.msg);
    cr_expect_eq(jsonl_get_string(&r, o, "prompt", 1, &s, &n, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "prompts.jsonl:4: expected a JSON object with a string field "
                              "'prompt'"),
              "%s", err.msg);
    cJSON_Delete(o);
    cr_expect_eq(jsonl_next(&r, &o, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "prompts.jsonl:5: invalid JSON"), "%s", err.msg);
    cr_expect_eq(jsonl_next(&r, &o, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "prompts.jsonl:6: expected a JSON object"), "%s", err.msg);
    cr_expect_eq(jsonl_next(&r, &o, &err), 0);
    jsonl_close(&r);
    unlink(path);
    rmdir(dir);
}

Test(jsonl, reads_lines_longer_than_any_buffer) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/long.jsonl", dir);
    size_t big  = 3u << 20;
    char  *data = malloc(big + 32);
    memcpy(data, "{\"text\": \"", 10);
    memset(data + 10, 'x', big);
    memcpy(data + 10 + big, "\"}", 2);
    write_file(path, data, big + 12);
    free(data);
    jsonl_reader r;
    cJSON       *o = NULL;
    const char  *s;
    size_t       n;
    cr_assert_eq(jsonl_open(&r, path, NULL), 0);
    cr_assert_eq(jsonl_next(&r, &o, NULL), 1);
    cr_assert_eq(jsonl_get_string(&r, o, "text", 1, &s, &n, NULL), 0);
    cr_expect_eq(n, big);
    cJSON_Delete(o);
    jsonl_close(&r);
    unlink(path);
    rmdir(dir);
}

Test(jsonl, token_id_arrays_are_range_checked) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/req.jsonl", dir);
    const char data[] = "{\"ids\": [1, 2, 3]}\n{\"ids\": [1, 99]}\n{\"ids\": [1.5]}\n";
    write_file(path, data, sizeof data - 1);
    jsonl_reader r;
    assay_error  err;
    cJSON       *o;
    int32_t     *ids;
    size_t       n;
    cr_assert_eq(jsonl_open(&r, path, NULL), 0);
    cr_assert_eq(jsonl_next(&r, &o, NULL), 1);
    cr_assert_eq(jsonl_get_ids(&r, o, "ids", 50, &ids, &n, &err), 0);
    cr_expect_eq(n, 3);
    cr_expect_eq(ids[2], 3);
    free(ids);
    cJSON_Delete(o);
    cr_assert_eq(jsonl_next(&r, &o, NULL), 1);
    cr_expect_eq(jsonl_get_ids(&r, o, "ids", 50, &ids, &n, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "req.jsonl:2: 'ids'[1]"), "%s", err.msg);
    cJSON_Delete(o);
    cr_assert_eq(jsonl_next(&r, &o, NULL), 1);
    cr_expect_eq(jsonl_get_ids(&r, o, "ids", 50, &ids, &n, &err), ASSAY_EFORMAT);
    cJSON_Delete(o);
    jsonl_close(&r);
    unlink(path);
    rmdir(dir);
}

/* ---- option parsing ------------------------------------------------------------------------ */

Test(cli_common, parses_shared_options_and_names_bad_values) {
    char      *argv[] = {"ppl",    "--threads", "3",    "--device=cpu", "--mem-budget", "1.5G",
                         "--json", "--threads", "zero", "--device",     "tpu"};
    cli_common c      = {0};
    int        i      = 1;
    cr_assert_eq(cli_common_parse(&c, 11, argv, &i, NULL), 1);
    cr_expect_eq(c.threads, 3);
    i++;
    cr_assert_eq(cli_common_parse(&c, 11, argv, &i, NULL), 1);
    cr_expect_eq(c.device, CLI_DEVICE_CPU);
    i++;
    cr_assert_eq(cli_common_parse(&c, 11, argv, &i, NULL), 1);
    cr_expect_eq(c.mem_budget, (size_t)(1.5 * 1024 * 1024 * 1024));
    i++;
    cr_assert_eq(cli_common_parse(&c, 11, argv, &i, NULL), 1);
    cr_expect_eq(c.json, 1);
    i++;
    assay_error err;
    cr_expect_eq(cli_common_parse(&c, 11, argv, &i, &err), -1);
    cr_expect(strstr(err.msg, "--threads") && strstr(err.msg, "zero"), "%s", err.msg);
    i++;
    cr_expect_eq(cli_common_parse(&c, 11, argv, &i, &err), -1);
    cr_expect(strstr(err.msg, "tpu"), "%s", err.msg);
}

Test(jsonl, escaped_nuls_come_back_with_their_lengths_in_every_field) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/nul.jsonl", dir);
    /* \\u0000 is an escaped backslash followed by "u0000": six characters, no NUL */
    const char data[] = "{\"text\": \"a\\u0000b\\u0000\", \"stop\": [\"\\u0000\", \"x\\u0000y\"], "
                        "\"lit\": \"\\\\u0000\", \"id\": [\"i\\u0000d\"]}\n";
    write_file(path, data, sizeof data - 1);
    jsonl_reader r;
    assay_error  err;
    cJSON       *o = NULL;
    const char  *s, **strs;
    size_t       n, *lens;
    cr_assert_eq(jsonl_open(&r, path, &err), 0);
    cr_assert_eq(jsonl_next(&r, &o, &err), 1, "%s", err.msg);
    cr_assert_eq(jsonl_get_string(&r, o, "text", 1, &s, &n, &err), 0);
    cr_expect_eq(n, 4);
    cr_expect(!memcmp(s, "a\0b\0", 4));
    cr_assert_eq(jsonl_get_string(&r, o, "text", 1, &s, &n, &err), 0); /* again: same bytes */
    cr_expect_eq(n, 4);
    cr_expect(!memcmp(s, "a\0b\0", 4));
    cr_assert_eq(jsonl_get_strings(&r, o, "stop", &strs, &lens, &n, &err), 0);
    cr_assert_eq(n, 2);
    cr_expect(lens[0] == 1 && strs[0][0] == '\0');
    cr_expect(lens[1] == 3 && !memcmp(strs[1], "x\0y", 3));
    free(strs);
    free(lens);
    cr_assert_eq(jsonl_get_string(&r, o, "lit", 1, &s, &n, &err), 0);
    cr_expect(n == 6 && !memcmp(s, "\\u0000", 6), "%.*s", (int)n, s);
    /* a field no helper read prints back as it was written */
    char *id = jsonl_print(cJSON_GetObjectItem(o, "id"), 0);
    cr_expect_str_eq(id, "[\"i\\u0000d\"]");
    free(id);
    cJSON_Delete(o);
    jsonl_close(&r);
    /* output strings: NUL as \u0000, a stray 0xFF byte as U+FFFD (never mistaken for a NUL) */
    cJSON *c = jsonl_string_create("p\0q\xff", 4);
    char  *p = jsonl_print(c, 0);
    cr_expect_str_eq(p, "\"p\\u0000q\xef\xbf\xbd\"");
    free(p);
    cJSON_Delete(c);
    unlink(path);
    rmdir(dir);
}

Test(jsonl, invalid_utf8_and_deep_nesting_are_refused_naming_line_and_column) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    char data[512];
    int  n = snprintf(data, sizeof data,
                      "{\"text\": \"caf\xc3\xa9 \xff\"}\n{\"text\": \"\xed\xa0\x80\"}\n{\"a\": ");
    for (int i = 0; i < 70; i++)
        data[n++] = '[';
    for (int i = 0; i < 70; i++)
        data[n++] = ']';
    n += snprintf(data + n, sizeof data - (size_t)n, "}\n");
    write_file(path, data, (size_t)n);
    jsonl_reader r;
    assay_error  err;
    cJSON       *o = NULL;
    cr_assert_eq(jsonl_open(&r, path, &err), 0);
    cr_expect_eq(jsonl_next(&r, &o, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "bad.jsonl:1: invalid UTF-8 at column 17"), "%s", err.msg);
    cr_expect_eq(jsonl_next(&r, &o, &err), ASSAY_EFORMAT); /* a UTF-16 surrogate */
    cr_expect(strstr(err.msg, "bad.jsonl:2: invalid UTF-8 at column 11"), "%s", err.msg);
    cr_expect_eq(jsonl_next(&r, &o, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "bad.jsonl:3: JSON nested deeper than 64 levels"), "%s", err.msg);
    cr_expect_eq(jsonl_next(&r, &o, &err), 0);
    jsonl_close(&r);
    unlink(path);
    rmdir(dir);
}

Test(jsonl, unknown_fields_are_named_with_the_known_ones) {
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/p.jsonl", dir);
    const char data[] = "{\"prompt\": \"a\", \"max_new_token\": 3}\n";
    write_file(path, data, sizeof data - 1);
    static const char *const known[] = {"prompt", "max_new_tokens", NULL};
    jsonl_reader             r;
    assay_error              err;
    cJSON                   *o = NULL;
    cr_assert_eq(jsonl_open(&r, path, &err), 0);
    cr_assert_eq(jsonl_next(&r, &o, &err), 1);
    cr_expect_eq(jsonl_check_fields(&r, o, known, 1, &err), ASSAY_EFORMAT);
    cr_expect(strstr(err.msg, "p.jsonl:1: unknown field \"max_new_token\" (known: prompt, "
                              "max_new_tokens)"),
              "%s", err.msg);
    cr_expect_eq(jsonl_check_fields(&r, o, known, 0, &err), 0); /* a warning only */
    cr_expect_eq(r.n_warned, 1);
    cr_expect_eq(jsonl_check_fields(&r, o, known, 0, &err), 0);
    cr_expect_eq(r.n_warned, 1, "the same name twice");
    cJSON_Delete(o);
    jsonl_close(&r);
    unlink(path);
    rmdir(dir);
}
