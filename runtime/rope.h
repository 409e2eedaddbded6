/* runtime/rope.h — the host-side RoPE table of a model: the inverse frequencies every backend's
 * rope_kv takes (f32, head_dim / 2), computed the way transformers computes them. */
#ifndef ASSAY_ROPE_H
#define ASSAY_ROPE_H

/* inv_freq (rot_dim / 2 floats), all in float32 as transformers does: default: 1 /
 * theta^(2i/rot_dim); linear (kind 2): default / factor; llama3 (kind 3): the piecewise
 * low/high-frequency scaling of _compute_llama3_parameters. kind 1 is default (loader/config.h
 * rope_kind). Bit for bit the table kernels/cpu's rope_inv_freq gives (tests/test_kernels.c). */
void rope_table_inv_freq(float *inv_freq, int rot_dim, float theta, int kind, float factor,
                         float low_freq_factor, float high_freq_factor, int orig_max_pos);

#endif
