#include "core/rope.h"

#include <math.h>

void rope_inv_freq(float *inv_freq, int rot_dim, float theta, int kind, float factor,
                   float low_freq_factor, float high_freq_factor, int orig_max_pos) {
    int half = rot_dim / 2;
    for (int i = 0; i < half; i++) {
        /* torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32 */
        float e     = (float)(2 * i) / (float)rot_dim;
        inv_freq[i] = 1.0f / powf(theta, e);
    }
    if (kind == 2) { /* linear: inv_freq /= factor */
        for (int i = 0; i < half; i++)
            inv_freq[i] = inv_freq[i] / factor;
    } else if (kind == 3) { /* llama3: _compute_llama3_parameters, float32 tensor ops */
        float low_wavelen  = (float)((double)orig_max_pos / low_freq_factor);
        float high_wavelen = (float)((double)orig_max_pos / high_freq_factor);
        float denom        = (float)((double)high_freq_factor - (double)low_freq_factor);
        for (int i = 0; i < half; i++) {
            float f       = inv_freq[i];
            float wavelen = (float)(2.0 * M_PI) / f;
            float fl      = wavelen > low_wavelen ? f / factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float s = ((float)orig_max_pos / wavelen - low_freq_factor) / denom;
                fl      = (1.0f - s) * fl / factor + s * fl;
            }
            inv_freq[i] = fl;
        }
    }
}
