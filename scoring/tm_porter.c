/* scoring/tm_porter.c — the Porter stemmer as nltk's PorterStemmer computes it in its default
 * NLTK_EXTENSIONS mode (the stemmer rouge-score uses): Porter's 1980 steps with Martin Porter's and
 * NLTK's amendments, and NLTK's table of irregular forms. Works in place on a copy of the word; no
 * rule makes a word longer than it was. */
#include <string.h>

#include "scoring/textmetrics.h"

static int is_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

/* A consonant is a letter other than a vowel, and other than a y after a consonant: walking back
 * over a run of y's flips the answer once per y. */
static int is_cons(const char *w, size_t i) {
    if (is_vowel(w[i]))
        return 0;
    if (w[i] != 'y')
        return 1;
    int negate = 0;
    while (i > 0 && w[i] == 'y') {
        negate = !negate;
        i--;
    }
    return (!is_vowel(w[i])) != negate;
}

/* m in [C](VC){m}[V], in one pass: a y is a consonant exactly when the letter before is not. */
static int measure(const char *w, size_t n) {
    int m = 0, prev = -1;
    for (size_t i = 0; i < n; i++) {
        int c = is_vowel(w[i]) ? 0 : w[i] == 'y' ? (i == 0 ? 1 : !prev) : 1;
        if (prev == 0 && c == 1)
            m++;
        prev = c;
    }
    return m;
}

static int contains_vowel(const char *w, size_t n) {
    int prev = -1;
    for (size_t i = 0; i < n; i++) {
        int c = is_vowel(w[i]) ? 0 : w[i] == 'y' ? (i == 0 ? 1 : !prev) : 1;
        if (!c)
            return 1;
        prev = c;
    }
    return 0;
}

static int ends_double_cons(const char *w, size_t n) {
    return n >= 2 && w[n - 1] == w[n - 2] && is_cons(w, n - 1);
}

/* *o: ends consonant-vowel-consonant, the last not w, x or y; NLTK also takes a two-letter
 * vowel-consonant word. */
static int ends_cvc(const char *w, size_t n) {
    return (n >= 3 && is_cons(w, n - 3) && !is_cons(w, n - 2) && is_cons(w, n - 1) &&
            w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y') ||
           (n == 2 && !is_cons(w, 0) && is_cons(w, 1));
}

static int ends_with(const char *w, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && memcmp(w + n - k, suf, k) == 0;
}

enum cond { C_NONE, C_M_GT0, C_M_GT1, C_ION, C_LOGI, C_Y_AFTER_CONS, C_NOT_LSZ, C_E_M1_CVC, C_LL };

typedef struct rule {
    const char *suffix; /* "*d" is the double-consonant rule */
    const char *repl;
    enum cond   cond;
} rule;

/* The rule's condition on the stem (the word without the suffix). */
static int cond_holds(enum cond c, const char *w, size_t n, size_t stem) {
    switch (c) {
    case C_NONE: return 1;
    case C_M_GT0: return measure(w, stem) > 0;
    case C_M_GT1: return measure(w, stem) > 1;
    case C_ION: return measure(w, stem) > 1 && (w[stem - 1] == 's' || w[stem - 1] == 't');
    case C_LOGI: /* measured on the word less "ogi", as NLTK writes it */
        return measure(w, n - 3) > 0;
    case C_Y_AFTER_CONS: return stem > 1 && is_cons(w, stem - 1);
    case C_NOT_LSZ: return w[n - 1] != 'l' && w[n - 1] != 's' && w[n - 1] != 'z';
    case C_E_M1_CVC: return measure(w, stem) == 1 && ends_cvc(w, stem);
    case C_LL: return measure(w, n - 1) > 1;
    }
    return 0;
}

/* The first rule whose suffix the word ends with decides: applied if its condition holds, else
 * the word is left as it is. */
static void apply_rules(char *w, size_t *n, const rule *rules, size_t n_rules) {
    for (size_t r = 0; r < n_rules; r++) {
        const rule *ru = &rules[r];
        if (strcmp(ru->suffix, "*d") == 0) {
            if (!ends_double_cons(w, *n))
                continue;
            if (cond_holds(ru->cond, w, *n, *n - 2))
                *n -= 1; /* the stem less both letters, plus one of them */
            return;
        }
        if (!ends_with(w, *n, ru->suffix))
            continue;
        size_t stem = *n - strlen(ru->suffix);
        if (cond_holds(ru->cond, w, *n, stem)) {
            size_t k = strlen(ru->repl);
            memcpy(w + stem, ru->repl, k);
            *n = stem + k;
        }
        return;
    }
}

#define N_RULES(a) (sizeof(a) / sizeof((a)[0]))

static void replace_suffix(char *w, size_t *n, size_t suffix_len, const char *repl) {
    size_t k = strlen(repl);
    memcpy(w + *n - suffix_len, repl, k);
    *n = *n - suffix_len + k;
}

static void step1a(char *w, size_t *n) {
    if (*n == 4 && ends_with(w, *n, "ies")) {
        replace_suffix(w, n, 3, "ie");
        return;
    }
    static const rule rules[] = {
        {"sses", "ss", C_NONE}, {"ies", "i", C_NONE}, {"ss", "ss", C_NONE}, {"s", "", C_NONE}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step1b(char *w, size_t *n) {
    if (ends_with(w, *n, "ied")) {
        replace_suffix(w, n, 3, *n == 4 ? "ie" : "i");
        return;
    }
    if (ends_with(w, *n, "eed")) {
        if (measure(w, *n - 3) > 0)
            *n -= 1;
        return;
    }
    size_t stem;
    if (ends_with(w, *n, "ed") && contains_vowel(w, *n - 2))
        stem = *n - 2;
    else if (ends_with(w, *n, "ing") && contains_vowel(w, *n - 3))
        stem = *n - 3;
    else
        return;
    *n                        = stem;
    static const rule rules[] = {{"at", "ate", C_NONE},
                                 {"bl", "ble", C_NONE},
                                 {"iz", "ize", C_NONE},
                                 {"*d", "", C_NOT_LSZ},
                                 {"", "e", C_E_M1_CVC}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step1c(char *w, size_t *n) {
    static const rule rules[] = {{"y", "i", C_Y_AFTER_CONS}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step2(char *w, size_t *n) {
    if (ends_with(w, *n, "alli") && measure(w, *n - 4) > 0) {
        replace_suffix(w, n, 4, "al");
        step2(w, n);
        return;
    }
    static const rule rules[] = {
        {"ational", "ate", C_M_GT0}, {"tional", "tion", C_M_GT0}, {"enci", "ence", C_M_GT0},
        {"anci", "ance", C_M_GT0},   {"izer", "ize", C_M_GT0},    {"bli", "ble", C_M_GT0},
        {"alli", "al", C_M_GT0},     {"entli", "ent", C_M_GT0},   {"eli", "e", C_M_GT0},
        {"ousli", "ous", C_M_GT0},   {"ization", "ize", C_M_GT0}, {"ation", "ate", C_M_GT0},
        {"ator", "ate", C_M_GT0},    {"alism", "al", C_M_GT0},    {"iveness", "ive", C_M_GT0},
        {"fulness", "ful", C_M_GT0}, {"ousness", "ous", C_M_GT0}, {"aliti", "al", C_M_GT0},
        {"iviti", "ive", C_M_GT0},   {"biliti", "ble", C_M_GT0},  {"fulli", "ful", C_M_GT0},
        {"logi", "log", C_LOGI}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step3(char *w, size_t *n) {
    static const rule rules[] = {{"icate", "ic", C_M_GT0}, {"ative", "", C_M_GT0},
                                 {"alize", "al", C_M_GT0}, {"iciti", "ic", C_M_GT0},
                                 {"ical", "ic", C_M_GT0},  {"ful", "", C_M_GT0},
                                 {"ness", "", C_M_GT0}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step4(char *w, size_t *n) {
    static const rule rules[] = {
        {"al", "", C_M_GT1},    {"ance", "", C_M_GT1}, {"ence", "", C_M_GT1}, {"er", "", C_M_GT1},
        {"ic", "", C_M_GT1},    {"able", "", C_M_GT1}, {"ible", "", C_M_GT1}, {"ant", "", C_M_GT1},
        {"ement", "", C_M_GT1}, {"ment", "", C_M_GT1}, {"ent", "", C_M_GT1},  {"ion", "", C_ION},
        {"ou", "", C_M_GT1},    {"ism", "", C_M_GT1},  {"ate", "", C_M_GT1},  {"iti", "", C_M_GT1},
        {"ous", "", C_M_GT1},   {"ive", "", C_M_GT1},  {"ize", "", C_M_GT1}};
    apply_rules(w, n, rules, N_RULES(rules));
}

static void step5a(char *w, size_t *n) {
    if (!ends_with(w, *n, "e"))
        return;
    size_t stem = *n - 1;
    int    m    = measure(w, stem);
    if (m > 1 || (m == 1 && !ends_cvc(w, stem)))
        *n = stem;
}

static void step5b(char *w, size_t *n) {
    static const rule rules[] = {{"ll", "l", C_LL}};
    apply_rules(w, n, rules, N_RULES(rules));
}

int tm_porter_stem(const char *w, size_t n, char *out, size_t cap) {
    if (!out || cap < n + 1)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] + 32 : w[i]);
    out[n]                                  = '\0';
    static const char *const irregular[][2] = {
        {"sky", "sky"},        {"skies", "sky"},        {"dying", "die"},
        {"lying", "lie"},      {"tying", "tie"},        {"news", "news"},
        {"innings", "inning"}, {"inning", "inning"},    {"outings", "outing"},
        {"outing", "outing"},  {"cannings", "canning"}, {"canning", "canning"},
        {"howe", "howe"},      {"proceed", "proceed"},  {"exceed", "exceed"},
        {"succeed", "succeed"}};
    for (size_t i = 0; i < N_RULES(irregular); i++) {
        if (strlen(irregular[i][0]) == n && memcmp(out, irregular[i][0], n) == 0) {
            strcpy(out, irregular[i][1]); /* never longer than the form it replaces */
            return 0;
        }
    }
    if (n <= 2)
        return 0;
    step1a(out, &n);
    step1b(out, &n);
    step1c(out, &n);
    step2(out, &n);
    step3(out, &n);
    step4(out, &n);
    step5a(out, &n);
    step5b(out, &n);
    out[n] = '\0';
    return 0;
}
