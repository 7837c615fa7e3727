/* Fused passes of the fast time-frequency fusion block's forward (see
 * ser/models/fast/branches_native.py; called only through ser/models/native/ops.py).
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

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* out[r * ostride + p] = sum_c w[r, c] relu(h[r, c, p]), positions in blocks of 512 that
 * stay in L1 while the C channel rows stream past. With signs (not NULL; AVX-512 builds)
 * it also records the signs of h for the backward (see tff_slope_products below): bit j of
 * signs[r, c, w] is [h[r, c, 16 w + j] > 0], rows c in [C, Cpad) zero. */
void tff_contract(const float *restrict h, const float *restrict w, float *restrict out, i64 R,
                  i64 C, i64 P, i64 ostride, uint16_t *restrict signs, i64 Cpad, int threads) {
    const i64 block = 512;
    i64 blocks = (P + block - 1) / block, W = (P + 15) / 16;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 rb = 0; rb < R * blocks; ++rb) {
        i64 r = rb / blocks, p0 = (rb % blocks) * block;
        i64 n = p0 + block < P ? block : P - p0;
        float acc[block];
        for (i64 p = 0; p < n; ++p) acc[p] = 0.0f;
        for (i64 c = 0; c < C; ++c) {
            const float *restrict row = h + (r * C + c) * P + p0;
            float wc = w[r * C + c];
#ifdef __AVX512F__
            if (signs) {
                uint16_t *srow = signs + (r * Cpad + c) * W + p0 / 16;
                __m512 zero = _mm512_setzero_ps(), wv = _mm512_set1_ps(wc);
                for (i64 p = 0; p < n; p += 16) {
                    i64 m = n - p < 16 ? n - p : 16;
                    __mmask16 valid = (__mmask16)((1u << m) - 1u);
                    __m512 v = _mm512_maskz_loadu_ps(valid, row + p);
                    __mmask16 positive = _mm512_mask_cmp_ps_mask(valid, v, zero, _CMP_GT_OQ);
                    srow[p / 16] = (uint16_t)positive;
                    __m512 a = _mm512_maskz_loadu_ps(valid, acc + p);
                    a = _mm512_mask3_fmadd_ps(wv, v, a, positive); /* a += w v where v > 0 */
                    _mm512_mask_storeu_ps(acc + p, valid, a);
                }
                continue;
            }
#endif
#pragma omp simd
            for (i64 p = 0; p < n; ++p) acc[p] += wc * (row[p] > 0.0f ? row[p] : 0.0f);
        }
        if (signs)
            for (i64 c = C; c < Cpad; ++c)
                memset(signs + (r * Cpad + c) * W + p0 / 16, 0,
                       (size_t)((n + 15) / 16) * sizeof(uint16_t));
        memcpy(out + r * ostride + p0, acc, (size_t)n * sizeof(float));
    }
}

/* ---- The backward's slope products from the forward's ReLU signs ----------------------
 *
 * The forward records which pre-activations were positive: bit j of signs[r, c, w] is
 * [h[r, c, 16 w + j] > 0] (bits past the P positions are 0; rows c >= C, up to a multiple
 * of 4, are 0). The backward then needs, per sample r, branch patch rows k < K1 and
 * channel c,
 *   first[r, k, c]  = sum_p g[r, p] P[r, k, p] [h[r, c, p] > 0]
 *   second[r, k, c] = sum_p q[p]    P[r, k, p] [h[r, c, p] > 0]     (q NULL: ones)
 * (the matrix products [g * P; q * P] @ slope of the PyTorch formulation) without
 * recomputing h or storing the slope: masked sums of two patch rows at a time for four
 * channels at a time, 16 accumulators in registers. AVX-512 only (its 16-bit lane masks
 * are the signs); tff_has_signs() says whether this build has it.
 */

#ifdef __AVX512F__

int tff_has_signs(void) { return 1; }

void tff_slope_products(const float *restrict patches, const float *restrict g, i64 gstride,
                        const float *restrict q, int want_second,
                        const uint16_t *restrict signs, float *restrict first,
                        float *restrict second, i64 R, i64 K1, i64 C, i64 Cpad, i64 P,
                        int threads) {
    i64 W = (P + 15) / 16, groups = Cpad / 4, pairs = K1 / 2;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (i64 task = 0; task < R * groups * pairs; ++task) {
        i64 r = task / (groups * pairs), rest = task % (groups * pairs);
        i64 c0 = 4 * (rest / pairs), k0 = 2 * (rest % pairs);
        const float *p0 = patches + (r * K1 + k0) * P, *p1 = p0 + P, *gr = g + r * gstride;
        const uint16_t *s = signs + (r * Cpad + c0) * W;
        __m512 f[2][4], sec[2][4]; /* [patch row][channel]: first and second */
        for (int kk = 0; kk < 2; ++kk)
            for (int cc = 0; cc < 4; ++cc) f[kk][cc] = sec[kk][cc] = _mm512_setzero_ps();
        for (i64 w = 0; w < W; ++w) {
            i64 p = 16 * w, n = P - p < 16 ? P - p : 16;
            __mmask16 valid = (__mmask16)((1u << n) - 1u);
            __m512 rows[2] = {_mm512_maskz_loadu_ps(valid, p0 + p),
                              _mm512_maskz_loadu_ps(valid, p1 + p)};
            __m512 gv = _mm512_maskz_loadu_ps(valid, gr + p);
            __m512 qv = q ? _mm512_maskz_loadu_ps(valid, q + p) : _mm512_set1_ps(1.0f);
            __mmask16 m[4] = {s[w], s[W + w], s[2 * W + w], s[3 * W + w]};
            for (int kk = 0; kk < 2; ++kk) {
                __m512 u = _mm512_mul_ps(gv, rows[kk]);
                for (int cc = 0; cc < 4; ++cc)
                    f[kk][cc] = _mm512_mask_add_ps(f[kk][cc], m[cc], f[kk][cc], u);
                if (want_second) {
                    __m512 v = q ? _mm512_mul_ps(qv, rows[kk]) : rows[kk];
                    for (int cc = 0; cc < 4; ++cc)
                        sec[kk][cc] = _mm512_mask_add_ps(sec[kk][cc], m[cc], sec[kk][cc], v);
                }
            }
        }
        for (i64 kk = 0; kk < 2; ++kk)
            for (i64 cc = 0; cc < 4 && c0 + cc < C; ++cc) {
                i64 at = (r * K1 + k0 + kk) * C + c0 + cc;
                first[at] = _mm512_reduce_add_ps(f[kk][cc]);
                if (want_second) second[at] = _mm512_reduce_add_ps(sec[kk][cc]);
            }
    }
}

#else

int tff_has_signs(void) { return 0; }

void tff_slope_products(const float *patches, const float *g, i64 gstride, const float *q,
                        int want_second, const uint16_t *signs, float *first, float *second,
                        i64 R, i64 K1, i64 C, i64 Cpad, i64 P, int threads) {
    (void)patches, (void)g, (void)gstride, (void)q, (void)want_second, (void)signs;
    (void)first, (void)second, (void)R, (void)K1, (void)C, (void)Cpad, (void)P, (void)threads;
}

#endif
