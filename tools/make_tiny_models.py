#!/usr/bin/env python3
"""Builds the tiny random checkpoints and their reference outputs under tests/fixtures/models/.

Each fixture is a Hugging Face model directory (config.json, model.safetensors in float32,
tokenizer.json, tokenizer_config.json) plus reference.json: per-position log-probs, greedy ids
and greedy generations computed by `transformers` (eager attention, float32, CPU). The llama
fixture also gets ppl_reference.json (HF sliding-window perplexity, lm-eval rolling windows) and
score_reference.json (lm-eval loglikelihood of context/continuation pairs).

Everything is seeded: re-running rewrites the same files (up to the library versions recorded in
each reference). Usage: python3 tools/make_tiny_models.py [--out tests/fixtures/models] [--only NAME]
"""
import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# ---------------------------------------------------------------------------------------------
# Training text for the tokenizers. Written here so the script needs no data files.
CORPUS = """\
The river ran low that autumn, and the old ferryman spent his mornings mending nets he no longer
needed. Children from the village came down to the bank after school to skip stones; the best of
them could make a flat grey pebble bounce seven or eight times before it sank.

In the town hall, the council argued for three hours about the price of a new bridge. "We can't
afford it," said the treasurer, tapping a column of figures. "We can't afford not to," answered
the mayor, who had crossed the river by boat every day for forty-two years.

A recipe for plain bread: mix 500 grams of flour, 10 grams of salt, 7 grams of yeast and 350
millilitres of warm water. Knead for ten minutes, let it rise for an hour, shape it, let it rise
again, and bake at 220 degrees for about thirty-five minutes. The loaf is done when it sounds
hollow as you knock on its base.

Scientists measure the distance to nearby stars with parallax: as the Earth moves around the Sun,
a close star appears to shift against the far background. The angle is tiny, often less than one
second of arc, yet careful instruments can measure it to within a few millionths of a degree.

She opened the letter slowly. It was short, only four lines, written in a hand she had not seen
since she was a child. "I am sorry it took me so long," it began, and she had to sit down on the
stairs before she could read the rest.

Markets rose on Tuesday after the central bank held interest rates at 4.5 percent. Analysts had
expected a cut; some said the decision showed caution, others called it a mistake. Oil prices fell
slightly, while the price of gold reached its highest level since March.

The cat didn't care about any of it. It slept in the one square of sunlight on the kitchen floor,
moving a little every hour as the light crept toward the door, and woke only when someone opened a
tin. Then it was the most attentive animal in the world.

Questions we asked: Who built the wall? When was it finished? Why does it bend to the north near
the old well? Nobody we met knew all the answers, but everybody had a story, and most of the stories
were better than the truth would have been.
"""

# Cross-check text for each tokenizer: contractions, digits, punctuation, newlines, runs of spaces,
# characters outside the training alphabet (byte fallback / unseen bytes) and a decomposed accent
# (NFC composes it for qwen2).
CHECK_TEXT = ("The ferryman's boat crossed the river 12 times in 1984; they'd never seen it so low.\n"
              "  Two  spaces, a tab\there, caf\u00e9 and cafe\u0301 (NFC), na\u00efve \u2014 and an emoji \U0001F600!\n"
              "Zebras quickly jumped over 7 lazy dogs?")

# Text for the perplexity references (~300 llama tokens).
PPL_TEXT = (
    "The lighthouse keeper kept a log of every ship that passed the point. Most days the entries were "
    "short: a fishing boat at dawn, a ferry at noon, a cargo ship heading south before dark. On stormy "
    "nights he wrote more, describing the height of the waves and the colour of the sky, and once, in "
    "the winter of the great flood, he filled six pages about a small boat that reached the harbour "
    "with its mast broken and its crew singing. Years later his daughter found the logs in a box under "
    "the stairs. She read them all in one week, then gave them to the town museum, where they sit today "
    "in a glass case beside a brass telescope and a map of the coast drawn by hand."
)

SCORE_PAIRS = [
    # (context, continuation); trailing spaces of a context move to its continuation (lm-eval).
    ("The river ran low that", " autumn"),
    ("Knead for ten minutes, let it rise for an ", "hour"),
    ("", "The cat slept in the sun."),
    ("Question: Who built the wall?\nAnswer:", " Nobody knew."),
    ("She opened the letter", " slowly and sat down on the stairs"),
]

SEQ_LENGTHS = [5, 17, 40, 70]
GEN_NEW_TOKENS = 64
GEN_PROMPT_LENGTHS = [6, 12]
MARGIN_MIN = 1e-3   # retry a random draw whose greedy top-2 margin is smaller than this
INIT_STD = 0.15     # initializer_range: spreads logits so greedy choices are well separated

SP_SPECIALS = ["<unk>", "<s>", "</s>"]
SP_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz .,'TSIAW")
GPT2_SPLIT = None  # ByteLevel(use_regex=True) carries GPT-2's own regex
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN2_CHAT = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
              " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def corpus_lines():
    return [p.replace("\n", " ") + "\n" for p in CORPUS.split("\n\n")]


# ---------------------------------------------------------------------------------------------
# Tokenizers

def build_sp_tokenizer(vocab_size):
    """SentencePiece-style BPE like Llama 2's tokenizer.json: Prepend+Replace normalizer, no
    pre-tokenizer, byte_fallback with <0x00>..<0xFF> at ids 3..258, BOS added by a template."""
    n_fixed = len(SP_SPECIALS) + 256
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    # Training only: split at each ▁ so merges stay inside words, as SentencePiece does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    # Training sees only SP_ALPHABET, so everything else (digits, most capitals, newline, other
    # punctuation) goes through byte fallback. (The trainer's limit_alphabet breaks frequency ties
    # in hash order, which made the vocabulary differ from run to run.)
    lines = ["".join(c if c in SP_ALPHABET else " " for c in line) for line in corpus_lines()]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=SP_SPECIALS, show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    d = json.loads(tok.to_str())
    old = sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {s: i for i, s in enumerate(SP_SPECIALS)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in old:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    assert len(vocab) <= vocab_size, (len(vocab), vocab_size)
    d["model"]["vocab"] = vocab
    d["pre_tokenizer"] = None
    d["added_tokens"] = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(SP_SPECIALS)]
    tok = Tokenizer.from_str(json.dumps(d))
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    assert n_fixed <= tok.get_vocab_size()
    return tok


def build_bytelevel_tokenizer(vocab_size, split_regex, specials, nfc=False, bos=None):
    """Byte-level BPE. split_regex None: GPT-2 (ByteLevel pre-tokenizer with its built-in regex);
    else a Split(regex, isolated) + ByteLevel(use_regex=False) like Llama 3 / Qwen2. Specials are
    added after training so they sit at the end of the vocabulary, as in the real models."""
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    if split_regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    tok.add_special_tokens(specials)
    tok.decoder = decoders.ByteLevel()
    bl = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if bos is None:
        tok.post_processor = bl
    else:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence([bl, processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])])
    return tok


def tokenizer_config(tok, bos, eos, unk, add_bos, max_len, chat_template=None):
    added = {}
    for s in tok.get_added_tokens_decoder().items():
        i, at = s
        added[str(i)] = {"content": at.content, "lstrip": at.lstrip, "normalized": at.normalized,
                         "rstrip": at.rstrip, "single_word": at.single_word, "special": at.special}
    cfg = {"add_bos_token": add_bos, "add_eos_token": False, "added_tokens_decoder": added,
           "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": None,
           "clean_up_tokenization_spaces": False, "model_max_length": max_len,
           # The generic class: transformers 5's LlamaTokenizer/Qwen2Tokenizer rebuild their own
           # pipelines instead of reading tokenizer.json; the generic class reads it as it is.
           "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template:
        cfg["chat_template"] = chat_template
    return cfg


# ---------------------------------------------------------------------------------------------
# Models

def make_specs():
    """name -> (tokenizer kind, config class name, config kwargs, legacy config layout?)."""
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-5, initializer_range=INIT_STD)
    return {
        "llama": ("sp", "LlamaForCausalLM", dict(common, rope_theta=10000.0, max_position_embeddings=512,
                                                  tie_word_embeddings=False), True),
        "llama3": ("llama3", "LlamaForCausalLM", dict(common, rope_theta=500000.0, max_position_embeddings=512,
                                                      tie_word_embeddings=True, rope_scaling={
                                                          "rope_type": "llama3", "factor": 8.0,
                                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64}), True),
        "llama_linear": ("sp", "LlamaForCausalLM", dict(common, rope_theta=10000.0, max_position_embeddings=256,
                                                        tie_word_embeddings=False,
                                                        rope_scaling={"rope_type": "linear", "factor": 2.0}),
                         False),
        "llama_hd": ("sp", "LlamaForCausalLM", dict(common, head_dim=32, rope_theta=10000.0,
                                                    max_position_embeddings=256, tie_word_embeddings=False),
                     False),
        "qwen2": ("qwen2", "Qwen2ForCausalLM", dict(common, rope_theta=1000000.0, max_position_embeddings=256,
                                                    tie_word_embeddings=True, use_sliding_window=False,
                                                    rms_norm_eps=1e-6), False),
        "mistral": ("sp", "MistralForCausalLM", dict(common, rope_theta=10000.0, max_position_embeddings=256,
                                                     tie_word_embeddings=False, sliding_window=16), True),
        "gpt2": ("gpt2", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                                 activation_function="gelu_new", initializer_range=INIT_STD,
                                                 layer_norm_epsilon=1e-5, tie_word_embeddings=True), True),
    }


def tokenizer_for(kind, max_len):
    """Returns (Tokenizer, tokenizer_config dict, bos id or None, eos id)."""
    if kind == "sp":
        tok = build_sp_tokenizer(400)
        cfg = tokenizer_config(tok, "<s>", "</s>", "<unk>", True, max_len)
        return tok, cfg, 1, 2
    if kind == "llama3":
        sp = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tok = build_bytelevel_tokenizer(384, LLAMA3_SPLIT, sp, bos="<|begin_of_text|>")
        cfg = tokenizer_config(tok, "<|begin_of_text|>", "<|end_of_text|>", None, True, max_len, LLAMA3_CHAT)
        return tok, cfg, tok.token_to_id(sp[0]), tok.token_to_id(sp[1])
    if kind == "qwen2":
        sp = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = build_bytelevel_tokenizer(384, QWEN2_SPLIT, sp, nfc=True)
        cfg = tokenizer_config(tok, None, "<|endoftext|>", None, False, max_len, QWEN2_CHAT)
        return tok, cfg, None, tok.token_to_id(sp[0])
    if kind == "gpt2":
        tok = build_bytelevel_tokenizer(384, GPT2_SPLIT, ["<|endoftext|>"])
        eot = tok.token_to_id("<|endoftext|>")
        cfg = tokenizer_config(tok, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>", False, max_len)
        return tok, cfg, eot, eot
    raise ValueError(kind)


def build_model(name, cls_name, kwargs, vocab, bos, eos, seed):
    cls = getattr(transformers, cls_name)
    cfg_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config").replace("LMHeadModel", "Config"))
    kw = dict(kwargs)
    kw.update(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=None)
    config = cfg_cls(**kw)
    torch.manual_seed(seed)
    model = cls._from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname in ("model.norm.weight", "transformer.ln_f.weight"):
                p.uniform_(2.5, 4.5)                           # final norm: spreads the logits
            elif p.dim() == 1 and pname.endswith("weight"):    # other norm scales: random, not 1
                p.uniform_(0.6, 1.4)
            elif p.dim() == 1 and pname.endswith("bias"):      # q/k/v (Qwen2), all (GPT-2)
                p.normal_(0.0, 0.1)
    model.eval()
    return model


def legacy_config_layout(path):
    """Rewrites config.json to the transformers-4 layout most published checkpoints use: top-level
    rope_theta, rope_scaling dict, torch_dtype. transformers 5 reads both layouts."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    out = {}
    for k, v in cfg.items():
        out["torch_dtype" if k == "dtype" else k] = v
    if rp is not None:
        rp = dict(rp)
        out["rope_theta"] = rp.pop("rope_theta")
        out["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    out = dict(sorted(out.items()))
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# References

def forward_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].float()


def top2_margins(logits):
    t = torch.topk(logits, 2, dim=-1).values
    return (t[:, 0] - t[:, 1]).double()


def special_ids(tok):
    return set(tok.get_added_tokens_decoder().keys())


def random_ids(rng, n, vocab, specials, bos):
    pool = np.array([i for i in range(vocab) if i not in specials])
    ids = rng.choice(pool, size=n).tolist()
    if bos is not None:
        ids[0] = bos
    return [int(x) for x in ids]


def ref_sequence(model, ids):
    logits = forward_logits(model, ids)
    lp = torch.log_softmax(logits, dim=-1)          # float32, as HF/lm-eval compute it
    n = len(ids)
    margins = top2_margins(logits[: n - 1])
    return {"ids": ids,
            "logprobs": [float(lp[i, ids[i + 1]]) for i in range(n - 1)],
            "greedy": [int(x) for x in torch.argmax(logits[: n - 1], dim=-1)],
            "min_top2_margin": float(margins.min())}


def ref_generate(model, prompt, eos):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=GEN_NEW_TOKENS,
                             min_new_tokens=GEN_NEW_TOKENS, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=eos if eos is not None else 0)
    cont = [int(x) for x in out.sequences[0, len(prompt):]]
    raw = torch.stack([l[0].float() for l in out.logits])          # raw logits, before min_new_tokens
    # The raw argmax must be the chosen token: min_new_tokens never had to mask EOS.
    raw_argmax = [int(x) for x in torch.argmax(raw, dim=-1)]
    margin = float(top2_margins(raw).min())
    why = None
    if raw_argmax != cont:
        step = next(i for i in range(len(cont)) if raw_argmax[i] != cont[i])
        why = f"EOS was the argmax at step {step} (min_new_tokens masked it)"
    else:
        # Cross-check the cached decode against one full forward pass over prompt + continuation.
        full = forward_logits(model, prompt + cont)
        if [int(x) for x in torch.argmax(full[len(prompt) - 1: -1], dim=-1)] != cont:
            why = "cached decode and full forward disagree"
    return {"prompt": prompt, "continuation": cont, "min_top2_margin": margin}, why


def rope_inv_freq(config):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    rp = config.rope_parameters
    rt = rp.get("rope_type", "default")
    if rt == "default":
        hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        base = rp["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    inv, _ = ROPE_INIT_FUNCTIONS[rt](config, "cpu")
    return inv


def model_references(name, model, tok, bos, eos, seed):
    vocab = model.config.vocab_size
    specials = special_ids(tok)
    notes = []
    seqs = []
    max_pos = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
    for k, n in enumerate(SEQ_LENGTHS):
        assert n <= max_pos
        for attempt in range(20):
            rng = np.random.default_rng(seed * 1000 + k * 50 + attempt)
            r = ref_sequence(model, random_ids(rng, n, vocab, specials, bos))
            if r["min_top2_margin"] >= MARGIN_MIN:
                break
            notes.append(f"sequence {k}: draw {attempt} had top-2 margin {r['min_top2_margin']:.2e}, redrawn")
        seqs.append(r)
    gens = []
    for k, n in enumerate(GEN_PROMPT_LENGTHS):
        for attempt in range(20):
            rng = np.random.default_rng(seed * 1000 + 500 + k * 50 + attempt)
            g, why = ref_generate(model, random_ids(rng, n, vocab, specials, bos), eos)
            if why is None and g["min_top2_margin"] >= MARGIN_MIN:
                break
            why = why or f"top-2 margin {g['min_top2_margin']:.2e}"
            notes.append(f"prompt {k}: draw {attempt} had {why}, redrawn")
        else:
            raise RuntimeError(f"{name}: no generation prompt with a clear greedy path")
        gens.append(g)
    enc = tok.encode(CHECK_TEXT)
    ref = {"model": name, "torch": torch.__version__, "transformers": transformers.__version__,
           "tokenizers": tokenizers.__version__, "dtype": "float32", "attn_implementation": "eager",
           "logprobs_note": "log_softmax in float32 of the float32 logits; logprobs[i] = lp[i][ids[i+1]], "
                            "greedy[i] = argmax logits[i], i in 0..n-2; margins are top1-top2 raw logits",
           "sequences": seqs,
           "generate": gens,
           "generate_note": f"model.generate(do_sample=False, max_new_tokens={GEN_NEW_TOKENS}, min_new_tokens="
                            f"{GEN_NEW_TOKENS}); checked: raw argmax at every step is the chosen token (EOS was "
                            "never masked) and a full forward over prompt+continuation gives the same argmaxes",
           "text": CHECK_TEXT,
           "text_ids": enc.ids,
           "text_ids_no_special": tok.encode(CHECK_TEXT, add_special_tokens=False).ids,
           "text_offsets": [list(o) for o in enc.offsets],
           "text_decoded": tok.decode(enc.ids, skip_special_tokens=True)}
    if notes:
        ref["note"] = notes
    return ref


def check_sliding_window(model_dir, ids):
    """Mistral: the window must change logits in this transformers version. Returns the first
    position whose logits differ from the same weights without a window."""
    m_w = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                            dtype=torch.float32).eval()
    m_n = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                            dtype=torch.float32, sliding_window=None).eval()
    assert m_n.config.sliding_window is None and m_w.config.sliding_window == 16
    a, b = forward_logits(m_w, ids), forward_logits(m_n, ids)
    diff = (a - b).abs().amax(dim=-1)
    first = int(torch.nonzero(diff > 0)[0]) if bool((diff > 0).any()) else -1
    assert first > 0, "sliding_window had no effect on eager attention"
    assert float(diff[first:].max()) > 1e-3, "sliding_window effect too small to test"
    return first, float(diff[:first].max()) if first > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Perplexity and scoring references (llama)

def token_logprobs(model, ids):
    """lp[j] = log p(ids[j+1] | ids[..j]) in float32, for j in 0..n-2."""
    lp = torch.log_softmax(forward_logits(model, ids), dim=-1)
    return [float(lp[j, ids[j + 1]]) for j in range(len(ids) - 1)]


def hf_sliding_ppl(model, ids, max_length, stride):
    """HF 'Perplexity of fixed-length models' recipe, with the NLL summed exactly per token."""
    seq_len = len(ids)
    windows = []
    nll_sum, n_tokens = 0.0, 0
    doc_nll, doc_n = 0.0, 0
    prev_end = 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        inp = ids[begin:end]
        labels = list(inp)
        for j in range(len(inp) - trg_len):
            labels[j] = -100
        lp = token_logprobs(model, inp)
        # The model shifts labels left by one: position j predicts labels[j+1].
        scored = [j + 1 for j in range(len(inp) - 1) if labels[j + 1] != -100]
        w_nll = -math.fsum(float(lp[j - 1]) for j in scored)
        nll_sum += w_nll
        n_tokens += len(scored)
        with torch.no_grad():
            loss = model(torch.tensor([inp]), labels=torch.tensor([labels])).loss
        num_valid = sum(1 for x in labels if x != -100)
        doc_nll += float(loss) * (num_valid - 1)
        doc_n += num_valid - 1
        windows.append({"begin": begin, "end": end, "trg_len": trg_len, "n_scored": len(scored),
                        "first_scored": begin + scored[0] if scored else None, "nll_sum": w_nll})
        prev_end = end
        if end == seq_len:
            break
    return {"max_length": max_length, "stride": stride, "nll_sum": nll_sum, "n_tokens": n_tokens,
            "ppl": math.exp(nll_sum / n_tokens), "windows": windows,
            "doc_recipe": {"note": "the docs' own arithmetic: loss(mean over the window) * (num_valid_tokens - 1); "
                                   "it undercounts by one token in every window after the first",
                           "nll_sum": doc_nll, "n_tokens": doc_n, "ppl": math.exp(doc_nll / doc_n)}}


def get_rolling_token_windows(token_list, prefix_token, max_seq_len, context_len):
    """lm_eval.utils.get_rolling_token_windows, restated."""
    assert 1 <= context_len <= max_seq_len
    if not token_list:
        return
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    yield [prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        yield (token_list[window_end - max_seq_len - 1: window_end - 1],
               token_list[window_end - window_pred_len: window_end])
        predicted += window_pred_len


def make_disjoint_window(pair):
    a, b = pair
    return a[: len(a) - (len(b) - 1)], b


def lmeval_loglikelihood_tokens(model, context_enc, continuation_enc, max_length):
    """One request of lm-eval HFLM._loglikelihood_tokens (causal): (sum, is_greedy, per-token)."""
    inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
    contlen = len(continuation_enc)
    lp = torch.log_softmax(forward_logits(model, inp), dim=-1)
    sl = lp[len(inp) - contlen: len(inp)]
    greedy = [int(x) for x in torch.argmax(sl, dim=-1)]
    per = [float(sl[j, continuation_enc[j]]) for j in range(contlen)]
    # lm-eval sums in float32 (torch .sum()); we give the float64 sum too.
    s32 = float(torch.tensor(per, dtype=torch.float32).sum())
    return {"input": inp, "score_from": len(inp) - contlen, "targets": continuation_enc,
            "logprobs": per, "sum": math.fsum(per), "sum_float32": s32, "is_greedy": greedy == continuation_enc,
            "greedy": greedy}


def lmeval_rolling(model, hf_tok, text, max_length):
    prefix = hf_tok.bos_token_id if hf_tok.bos_token_id is not None else hf_tok.eos_token_id
    tokens = hf_tok.encode(text, add_special_tokens=False)
    windows = list(map(make_disjoint_window, get_rolling_token_windows(tokens, prefix, max_length, 1)))
    out = []
    for ctx, cont in windows:
        r = lmeval_loglikelihood_tokens(model, ctx, cont, max_length)
        out.append({"input": r["input"], "score_from": r["score_from"], "n_targets": len(cont),
                    "logprob_sum": r["sum"]})
    ll = math.fsum(w["logprob_sum"] for w in out)
    nll = -ll
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    return {"max_length": max_length, "context_len": 1, "prefix_token": prefix,
            "tok_encode": "tokenizer.encode(doc, add_special_tokens=False) (HFLM default add_bos_token=False)",
            "n_tokens": len(tokens), "loglikelihood": ll, "nll_sum": nll, "words": words, "bytes": nbytes,
            "word_perplexity": math.exp(nll / words), "byte_perplexity": math.exp(nll / nbytes),
            "bits_per_byte": nll / nbytes / math.log(2), "windows": out}


def lmeval_encode_pair(hf_tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = hf_tok.encode(context + continuation, add_special_tokens=False)
    ctx = hf_tok.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


def score_references(model, hf_tok, max_length):
    prefix = hf_tok.bos_token_id if hf_tok.bos_token_id is not None else hf_tok.eos_token_id
    pairs = list(SCORE_PAIRS)
    # A sixth pair built to be greedy: the continuation is the text of the model's own greedy
    # tokens after a context, kept only if lm-eval's encoding splits it back into those tokens.
    for greedy_ctx in ("Markets rose on Tuesday after the", "The loaf is done when it", "Oil prices fell",
                       "The cat didn't care about", "Children from the village came down to the"):
        ctx_ids = hf_tok.encode(greedy_ctx, add_special_tokens=False)
        ids = list(ctx_ids)
        for _ in range(3):
            ids.append(int(torch.argmax(forward_logits(model, ids)[-1])))
            full = hf_tok.decode(ids)
            if not full.startswith(greedy_ctx) or len(full) == len(greedy_ctx):
                continue
            cont_text = full[len(greedy_ctx):]
            c, k = lmeval_encode_pair(hf_tok, greedy_ctx, cont_text)
            if c == ctx_ids and k == ids[len(ctx_ids):] and greedy_ctx == greedy_ctx.rstrip():
                pairs.append((greedy_ctx, cont_text))
                break
        if len(pairs) == len(SCORE_PAIRS) + 1:
            break
    if len(pairs) < 6:
        pairs.append(("The cat didn't care about any of", " it."))
    out = []
    for context, continuation in pairs:
        if context == "":
            ctx, cont = [prefix], hf_tok.encode(continuation, add_special_tokens=False)
        else:
            ctx, cont = lmeval_encode_pair(hf_tok, context, continuation)
        r = lmeval_loglikelihood_tokens(model, ctx, cont, max_length)
        out.append({"context": context, "continuation": continuation, "context_enc": ctx,
                    "continuation_enc": cont, **r})
    return {"max_length": max_length, "prefix_token": prefix,
            "tok_encode": "tokenizer.encode(s, add_special_tokens=False) (HFLM default add_bos_token=False)",
            "encode_pair": "trailing spaces of the context move to the continuation; whole = enc(context + "
                           "continuation), context_enc = enc(context), continuation_enc = whole[len(context_enc):]; "
                           "empty context: context_enc = [prefix_token], continuation_enc = enc(continuation)",
            "requests": out}


# ---------------------------------------------------------------------------------------------

def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def dir_size(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def build_one(name, spec, out_root, seed):
    kind, cls_name, kwargs, legacy = spec
    max_len = kwargs.get("max_position_embeddings", kwargs.get("n_positions"))
    tok, tcfg, bos, eos = tokenizer_for(kind, max_len)
    vocab = tok.get_vocab_size()
    model = build_model(name, cls_name, kwargs, vocab, bos, eos, seed)
    final = os.path.join(out_root, name)
    tmpdir = tempfile.mkdtemp(prefix=f".{name}.", dir=out_root)
    try:
        model.save_pretrained(tmpdir, safe_serialization=True)
        if legacy:
            legacy_config_layout(os.path.join(tmpdir, "config.json"))
        tok.save(os.path.join(tmpdir, "tokenizer.json"))
        write_json(os.path.join(tmpdir, "tokenizer_config.json"), tcfg)

        # References come from the files on disk, so they describe exactly what is committed.
        disk = transformers.AutoModelForCausalLM.from_pretrained(tmpdir, attn_implementation="eager",
                                                                 dtype=torch.float32).eval()
        probe = list(range(3, 40))
        assert torch.equal(forward_logits(disk, probe), forward_logits(model, probe)), f"{name}: reload differs"
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmpdir)
        for t in (CHECK_TEXT, CORPUS[:300], ""):
            assert hf_tok(t)["input_ids"] == tok.encode(t).ids, f"{name}: AutoTokenizer differs on {t[:20]!r}"
        assert hf_tok.bos_token_id == bos and hf_tok.eos_token_id == eos, (name, hf_tok.bos_token_id, bos)

        ref = model_references(name, disk, tok, bos, eos, seed)
        extra = {}
        if name == "llama3":
            plain = transformers.LlamaConfig(**{k: v for k, v in kwargs.items() if k != "rope_scaling"})
            a, b = rope_inv_freq(disk.config), rope_inv_freq(plain)
            changed = [i for i in range(len(a)) if not torch.isclose(a[i], b[i], rtol=1e-6, atol=0)]
            assert 0 < len(changed) < len(a), "llama3 scaling should change some, not all, frequencies"
            extra["rope_inv_freq"] = [float(x) for x in a]
            extra["rope_inv_freq_unscaled"] = [float(x) for x in b]
        if name == "mistral":
            first, _ = check_sliding_window(tmpdir, ref["sequences"][-1]["ids"])
            extra["sliding_window_check"] = {
                "window": 16, "first_position_differing_from_no_window": first,
                "meaning": "query q sees keys k with q - window < k <= q (window keys, itself included)"
                           if first == 16 else "see first_position_differing_from_no_window"}
        if name == "qwen2":
            assert float(disk.model.layers[0].self_attn.q_proj.bias.detach().abs().min()) > 0
        if name == "gpt2":
            extra["n_positions"] = disk.config.n_positions
        if tcfg.get("chat_template"):
            msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who built the wall?"}]
            extra["chat"] = {"messages": msgs, "add_generation_prompt": True,
                             "rendered": hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                             "ids": list(hf_tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                                    return_dict=False)),
                             "ids_note": "apply_chat_template(tokenize=True): the rendered text encoded with "
                                         "add_special_tokens=False (the template writes any BOS itself)"}
        ref.update(extra)
        write_json(os.path.join(tmpdir, "reference.json"), ref)
        if name == "llama":
            hf_tok_max = kwargs["max_position_embeddings"]
            write_json(os.path.join(tmpdir, "score_reference.json"), dict(
                {"model": name, "torch": torch.__version__, "transformers": transformers.__version__},
                **score_references(disk, hf_tok, hf_tok_max)))
            ids = hf_tok(PPL_TEXT)["input_ids"]
            ppl = {"model": name, "torch": torch.__version__, "transformers": transformers.__version__,
                   "text": PPL_TEXT, "hf_sliding_window": {
                       "tokens": "tokenizer(text).input_ids (with BOS, as the recipe's tokenizer call adds it)",
                       "ids": ids,
                       "recipe": "for begin in range(0, n, stride): end = min(begin + max_length, n); trg_len = "
                                 "end - prev_end; labels = ids[begin:end] with the first len - trg_len set to -100; "
                                 "the model scores labels[j+1] from position j; stop when end == n",
                       "runs": [hf_sliding_ppl(disk, ids, 32, 16), hf_sliding_ppl(disk, ids, 64, 64)]},
                   "lm_eval_rolling": lmeval_rolling(disk, hf_tok, PPL_TEXT, 32)}
            write_json(os.path.join(tmpdir, "ppl_reference.json"), ppl)
        os.chmod(tmpdir, 0o755)
        for f in os.listdir(tmpdir):
            os.chmod(os.path.join(tmpdir, f), 0o644)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmpdir, final)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    margins = [s["min_top2_margin"] for s in ref["sequences"]] + [g["min_top2_margin"] for g in ref["generate"]]
    return {"name": name, "bytes": dir_size(final), "vocab": vocab, "params": sum(p.numel() for p in model.parameters()),
            "seq_margin": min(s["min_top2_margin"] for s in ref["sequences"]),
            "gen_margin": min(g["min_top2_margin"] for g in ref["generate"]), "min_margin": min(margins),
            "notes": len(ref.get("note", []))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "models"))
    ap.add_argument("--only", action="append", help="build just this fixture (repeatable)")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()   # e.g. "longer than model_max_length" for CHECK_TEXT
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    specs = make_specs()
    names = args.only or list(specs)
    rows = []
    for i, name in enumerate(specs):
        if name in names:
            rows.append(build_one(name, specs[name], args.out, seed=1234 + i))
    print(f"{'fixture':<13}{'bytes':>9}{'vocab':>7}{'params':>9}{'seq margin':>12}{'gen margin':>12}  redraws")
    for r in rows:
        print(f"{r['name']:<13}{r['bytes']:>9}{r['vocab']:>7}{r['params']:>9}{r['seq_margin']:>12.4g}"
              f"{r['gen_margin']:>12.4g}  {r['notes']}")
    total = dir_size(args.out)
    print(f"total {total} bytes in {os.path.normpath(args.out)}")
    if total > 6 * 1024 * 1024:
        print("error: fixtures exceed 6 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
