/* Fused passes of the fast time-frequency fusion block's forward (see ser/models/fast.py).
 *
 * h is a chunk of a branch's pre-activations, channels first: (R, C, P) float32 for R
 * samples, C channels, P = frames * features positions. SE needs each channel's (weighted)
 * sum of relu(h) over positions; the 1x1 projection then needs, per position, the
 * channel sum of relu(h) with per-(sample, channel) weights (projection weight, SE scale,
 * spatial-dropout factor). Both read h once and never write relu(h).
 */

#include <stdint.h>
#include <string.h>
#include <omp.h>

typedef int64_t i64;

/* sums[r, c] = sum_p q[p] relu(h[r, c, p]) (q NULL: all ones), in float blocks of 256
 * positions added in double. */
void tff_sums(const float *restrict h, const float *restrict q, float *restrict sums, i64 RC,
              i64 P, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 rc = 0; rc < RC; ++rc) {
        const float *restrict row = h + rc * P;
        double total = 0.0;
        for (i64 p0 = 0; p0 < P; p0 += 256) {
            i64 p1 = p0 + 256 < P ? p0 + 256 : P;
            float acc = 0.0f;
            if (q) {
#pragma omp simd reduction(+ : acc)
                for (i64 p = p0; p < p1; ++p) acc += q[p] * (row[p] > 0.0f ? row[p] : 0.0f);
            } else {
#pragma omp simd reduction(+ : acc)
                for (i64 p = p0; p < p1; ++p) acc += row[p] > 0.0f ? row[p] : 0.0f;
            }
            total += acc;
        }
        sums[rc] = (float)total;
    }
}

/* out[r * ostride + p] = sum_c w[r, c] relu(h[r, c, p]), positions in blocks of 512 that
 * stay in L1 while the C channel rows stream past. */
void tff_contract(const float *restrict h, const float *restrict w, float *restrict out, i64 R,
                  i64 C, i64 P, i64 ostride, int threads) {
    const i64 block = 512;
    i64 blocks = (P + block - 1) / block;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 rb = 0; rb < R * blocks; ++rb) {
        i64 r = rb / blocks, p0 = (rb % blocks) * block;
        i64 n = p0 + block < P ? block : P - p0;
        float acc[block];
        for (i64 p = 0; p < n; ++p) acc[p] = 0.0f;
        for (i64 c = 0; c < C; ++c) {
            const float *restrict row = h + (r * C + c) * P + p0;
            float wc = w[r * C + c];
#pragma omp simd
            for (i64 p = 0; p < n; ++p) acc[p] += wc * (row[p] > 0.0f ? row[p] : 0.0f);
        }
        memcpy(out + r * ostride + p0, acc, (size_t)n * sizeof(float));
    }
}
