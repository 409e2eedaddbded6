/* core/rope.h — RoPE inverse frequencies, the host-side table every backend's RoPE takes: pure
 * float32 arithmetic shared by the model (runtime/model.c) and the kernel tests. */
#ifndef ASSAY_CORE_ROPE_H
#define ASSAY_CORE_ROPE_H

/* inv_freq (rot_dim / 2 floats) computed in float32 the way transformers does: default:
 * 1 / theta^(2i/rot_dim); linear: default / factor; llama3: the piecewise low/high-frequency
 * scaling of _compute_llama3_parameters. kind: 1 default, 2 linear, 3 llama3 (matches
 * loader/config.h rope_kind). */
void rope_inv_freq(float *inv_freq, int rot_dim, float theta, int kind, float factor,
                   float low_freq_factor, float high_freq_factor, int orig_max_pos);

#endif
