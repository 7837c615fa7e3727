/* Fused elementwise passes of the fast Temporal-Aware Block (see ser/models/fast/tab_native.py;
 * called only through the checked operators of ser/models/native/ops.py).
 *
 * Tensors are float32, contiguous, laid out (G, B, T, C): G groups (reading directions),
 * B samples, T frames, C channels; a row is one (g, b, t) and holds C channels. Per-row
 * coefficients are (G, B, C) arrays indexed by the row's (g, b); per-channel ones are
 * (G, C). Reductions over rows accumulate in double, one partial per thread.
 *
 * Loops run over a sample's T * C values as one flat array, V at a time, rather than row
 * by row: C = 39 is no multiple of a vector's width, and a 39-long row loop spends nearly
 * as long in its remainder as in its vectors. Value i of a sample has channel i mod C, so
 * the per-channel coefficients are read from copies extended to C + V entries
 * (ext[c] = coef[c mod C]) at offset c0 = i mod C, which advances by V per step.
 *
 * A TAB computes  y1 = A1 * z1 + S1,  a1 = relu(y1)
 *                 y2 = A2 * z2 + S2,  h  = relu(y2),  out = x * sigmoid(h)
 * where z1, z2 are the bias-free causal convolutions, and A, S fold BatchNorm (mean,
 * 1/std, gamma, beta) and the channel-dropout factor of each (g, b, c).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef int64_t i64;

#define V 16 /* values per step of the flat loops: two 256-bit vectors */

/* ext[c] = src[c mod C] for c < C + V (ext holds C + V floats). */
static inline void extend(float *restrict ext, const float *restrict src, i64 C) {
    for (i64 c = 0; c < C + V; ++c) ext[c] = src[c % C];
}

static inline i64 advance(i64 c0, i64 C) {
    c0 += V;
    return c0 >= C ? c0 - C : c0; /* C >= V is not assumed: see the loop guards */
}

/* exp(v) for -17.5 <= v <= 0, vectorisable (libm's expf is not without -ffast-math):
 * v = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial (relative
 * error < 1e-7), times 2^n from the bits of -n (0 <= -n <= 25; neither a table lookup
 * nor building the exponent bits vectorises here). */
static inline float exp_small(float v) {
    int k = (int)(0.5f - v * 1.44269504088896341f); /* -round(v / ln2): truncation of a
                                                       non-negative value, no floorf call */
    float n = (float)-k;
    float r = v - n * 0.693359375f; /* ln2 in two parts, the first exact in few bits */
    r = r + n * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^-k = prod over the bits b_i of k of (1 - b_i (1 - 2^-(2^i))), each factor exact */
    float scale = 1.0f - 0.5f * (float)(k & 1);
    scale *= 1.0f - 0.75f * (float)((k >> 1) & 1);
    scale *= 1.0f - 0.9375f * (float)((k >> 2) & 1);
    scale *= 1.0f - 0.99609375f * (float)((k >> 3) & 1);
    scale *= 1.0f - 0.9999847412109375f * (float)((k >> 4) & 1);
    return p * scale;
}

/* sigmoid(v) for v >= 0 (its argument is a ReLU output). */
/* Beyond 17.5, exp(-v) < 2.6e-8 and 1 + exp(-v) rounds to 1 in float, as it does for the
 * clamped value: the result, 1.0f, is unchanged. */
static inline float sigmoid_nonnegative(float v) {
    return 1.0f / (1.0f + exp_small(v < 17.5f ? -v : -17.5f));
}

/* Per (g, c): sum and sum of squares of z over the B*T rows of group g. */
/* Each thread's two partial sums (part[t] = [first (width); second (width)]), totalled in
 * thread order into first and second; frees part. */
static void total_partials(double *part, int threads, i64 width, double *first,
                           double *second) {
    memset(first, 0, (size_t)width * sizeof(double));
    memset(second, 0, (size_t)width * sizeof(double));
    for (int p = 0; p < threads; ++p)
        for (i64 i = 0; i < width; ++i) {
            first[i] += part[(i64)p * 2 * width + i];
            second[i] += part[(i64)p * 2 * width + width + i];
        }
    free(part);
}

/* Per (g, c): sum and sum of squares of z over the N = B * T rows of group g. */
int tab_stats(const float *z, i64 G, i64 N, i64 C, double *sum, double *sq, int threads) {
    i64 width = G * C;
    double *part = calloc((size_t)threads * 2 * width, sizeof(double));
    if (!part) return 1;
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        used = nt;
        i64 rows = G * N, lo = rows * tid / nt, hi = rows * (tid + 1) / nt;
        double s[C + V], q[C + V];
        while (lo < hi) {
            i64 g = lo / N, end = (g + 1) * N < hi ? (g + 1) * N : hi; /* rows of group g */
            for (i64 c = 0; c < C + V; ++c) s[c] = q[c] = 0.0;
            const float *restrict zr = z + lo * C;
            i64 n = (end - lo) * C, i = 0, c0 = 0;
            if (C >= V)
                for (; i + V <= n; i += V) {
#pragma omp simd
                    for (int j = 0; j < V; ++j) {
                        double v = zr[i + j];
                        s[c0 + j] += v;
                        q[c0 + j] += v * v;
                    }
                    c0 = advance(c0, C);
                }
            for (; i < n; ++i) {
                double v = zr[i];
                s[c0] += v;
                q[c0] += v * v;
                if (++c0 == C) c0 = 0;
            }
            double *ps = part + (i64)tid * 2 * width + g * C, *pq = ps + width;
            for (i64 c = 0; c < C; ++c) {
                ps[c] += s[c] + (c < V ? s[c + C] : 0.0);
                pq[c] += q[c] + (c < V ? q[c + C] : 0.0);
            }
            lo = end;
        }
    }
    total_partials(part, used, width, sum, sq);
    return 0;
}

/* a = relu(A * z + S), A and S per (g, b, c). */
void tab_norm_relu(const float *z, const float *A, const float *S, float *a, i64 GB, i64 T,
                   i64 C, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 gb = 0; gb < GB; ++gb) {
        float Ax[C + V], Sx[C + V];
        extend(Ax, A + gb * C, C);
        extend(Sx, S + gb * C, C);
        const float *restrict zr = z + gb * T * C;
        float *restrict ar = a + gb * T * C;
        i64 n = T * C, i = 0, c0 = 0;
        if (C >= V)
            for (; i + V <= n; i += V) {
#pragma omp simd
                for (int j = 0; j < V; ++j) {
                    float y = Ax[c0 + j] * zr[i + j] + Sx[c0 + j];
                    ar[i + j] = y > 0.0f ? y : 0.0f;
                }
                c0 = advance(c0, C);
            }
        for (; i < n; ++i) {
            float y = Ax[c0] * zr[i] + Sx[c0];
            ar[i] = y > 0.0f ? y : 0.0f;
            if (++c0 == C) c0 = 0;
        }
    }
}

/* out = x * sigmoid(relu(A * z + S)), and its mean over the T frames of each (g, b). */
void tab_gate(const float *z, const float *x, const float *A, const float *S, float *out,
              float *mean, i64 GB, i64 T, i64 C, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 gb = 0; gb < GB; ++gb) {
        float Ax[C + V], Sx[C + V], acc[C + V];
        extend(Ax, A + gb * C, C);
        extend(Sx, S + gb * C, C);
        for (i64 c = 0; c < C + V; ++c) acc[c] = 0.0f;
        const float *restrict zr = z + gb * T * C, *restrict xr = x + gb * T * C;
        float *restrict orow = out + gb * T * C;
        i64 n = T * C, i = 0, c0 = 0;
        if (C >= V)
            for (; i + V <= n; i += V) {
#pragma omp simd
                for (int j = 0; j < V; ++j) {
                    float y = Ax[c0 + j] * zr[i + j] + Sx[c0 + j];
                    float o = xr[i + j] * sigmoid_nonnegative(y > 0.0f ? y : 0.0f);
                    orow[i + j] = o;
                    acc[c0 + j] += o;
                }
                c0 = advance(c0, C);
            }
        for (; i < n; ++i) {
            float y = Ax[c0] * zr[i] + Sx[c0];
            float o = xr[i] * sigmoid_nonnegative(y > 0.0f ? y : 0.0f);
            orow[i] = o;
            acc[c0] += o;
            if (++c0 == C) c0 = 0;
        }
        for (i64 c = 0; c < C; ++c)
            mean[gb * C + c] = (acc[c] + (c < V ? acc[c + C] : 0.0f)) / (float)T;
    }
}

/* Backward of relu(A * z + S) [and of the gate] followed by BatchNorm's batch statistics.
 *
 * The gradient reaching y = A * z + S, divided by the dropout factor, is
 *   gu = gh * [y > 0] * M,
 * where M is the dropout factor (per g, b, c; ones without dropout) and gh the gradient
 * of relu(y):
 *   gate == 0: gh = gin                                   (gin: d loss / d a)
 *   gate == 1: gh = gout * x * s * (1 - s), s = sigmoid(relu(y)),
 *              gout = gin + gmean  (gin may be NULL; gmean per (g, b, c) is the gradient
 *              of the time mean, already divided by T).
 * With xhat = (z - mu) * istd (per g, c), pass 0 accumulates per (g, c)
 *   sum_gu = sum gu,  sum_gx = sum gu * xhat,
 * and pass 1 writes the gradient of z,
 *   gz = scale * (gu - k1 - xhat * k2)       (k1, k2 per (g, c): the batch-statistics
 *                                             terms, zero with running statistics),
 * and, for the gate, the direct path gdirect = gout * s (d loss / d x through out = x * s).
 * gz may alias gin (gate == 0): each value is read before it is written.
 */
/* gu (see above) of value i in channel slot k of the extended coefficients; GIN is the
 * incoming gradient's expression (0.0f when there is none), S_OUT receives s (gate). */
#define GRAD_U(GATE, GIN, i, k, S_OUT, GU_OUT)                                              \
    do {                                                                                 \
        float y_ = Ax[k] * zr[i] + Sx[k];                                                \
        float g_;                                                                        \
        if (GATE) {                                                                      \
            float s_ = sigmoid_nonnegative(y_ > 0.0f ? y_ : 0.0f);                       \
            S_OUT = s_;                                                                  \
            g_ = ((GIN) + Gx[k]) * xr[i] * s_ * (1.0f - s_) * Mx[k];                     \
        } else {                                                                         \
            g_ = (GIN) * Mx[k];                                                          \
        }                                                                                \
        GU_OUT = y_ > 0.0f ? g_ : 0.0f;                                                  \
    } while (0)

/* One of the flat loops of tab_backward, for a pass, gate mode and incoming gradient
 * (GIN, an expression of the value index i). */
#define BACKWARD_LOOP(PASS, GATE, GIN)                                                   \
    do {                                                                                 \
        if (C >= V)                                                                      \
            for (; i + V <= n; i += V) {                                                 \
                _Pragma("omp simd") for (int j = 0; j < V; ++j) {                        \
                    float s = 0.0f, gu;                                                  \
                    GRAD_U(GATE, GIN(i + j), i + j, c0 + j, s, gu);                      \
                    if (PASS == 0) {                                                     \
                        fs[c0 + j] += gu;                                                \
                        fx[c0 + j] += gu * (X1[c0 + j] * zr[i + j] + X0[c0 + j]);        \
                    } else {                                                             \
                        gzr[i + j] = P1[c0 + j] * gu + P2[c0 + j] * zr[i + j] + P3[c0 + j]; \
                        if (GATE) gdr[i + j] = (GIN(i + j) + Gx[c0 + j]) * s;            \
                    }                                                                    \
                }                                                                        \
                c0 = advance(c0, C);                                                     \
            }                                                                            \
        for (; i < n; ++i) {                                                             \
            float s = 0.0f, gu;                                                          \
            GRAD_U(GATE, GIN(i), i, c0, s, gu);                                          \
            if (PASS == 0) {                                                             \
                fs[c0] += gu;                                                            \
                fx[c0] += gu * (X1[c0] * zr[i] + X0[c0]);                                \
            } else {                                                                     \
                gzr[i] = P1[c0] * gu + P2[c0] * zr[i] + P3[c0];                          \
                if (GATE) gdr[i] = (GIN(i) + Gx[c0]) * s;                                \
            }                                                                            \
            if (++c0 == C) c0 = 0;                                                       \
        }                                                                                \
    } while (0)

#define FROM_GIN(i) gr[i]
#define NO_GIN(i) 0.0f

int tab_backward(int pass, int gate, const float *gin, const float *gmean, const float *x,
                 const float *z, const float *A, const float *S, const float *M,
                 const float *mu, const float *istd, const float *scale, const float *k1,
                 const float *k2, float *gz, float *gdirect, double *sum_gu, double *sum_gx,
                 i64 G, i64 B, i64 T, i64 C, int threads) {
    i64 GB = G * B, width = G * C;
    double *part = NULL;
    if (pass == 0) {
        part = calloc((size_t)threads * 2 * width, sizeof(double));
        if (!part) return 1;
    }
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        used = nt;
        i64 lo = GB * tid / nt, hi = GB * (tid + 1) / nt;
        /* extended per-channel coefficients; xhat = X1 z + X0; gz = P1 gu + P2 z + P3 */
        float Ax[C + V], Sx[C + V], Mx[C + V], Gx[C + V], X1[C + V], X0[C + V];
        float P1[C + V], P2[C + V], P3[C + V], fs[C + V], fx[C + V], tmp[C];
        for (i64 gb = lo; gb < hi; ++gb) {
            i64 g = gb / B;
            extend(Ax, A + gb * C, C);
            extend(Sx, S + gb * C, C);
            extend(Mx, M + gb * C, C);
            if (gate) extend(Gx, gmean + gb * C, C);
            else for (i64 c = 0; c < C + V; ++c) Gx[c] = 0.0f;
            for (i64 c = 0; c < C; ++c) tmp[c] = istd[g * C + c];
            extend(X1, tmp, C);
            for (i64 c = 0; c < C; ++c) tmp[c] = -mu[g * C + c] * istd[g * C + c];
            extend(X0, tmp, C);
            if (pass == 1) {
                for (i64 c = 0; c < C; ++c) tmp[c] = scale[g * C + c];
                extend(P1, tmp, C);
                for (i64 c = 0; c < C; ++c)
                    tmp[c] = -scale[g * C + c] * k2[g * C + c] * istd[g * C + c];
                extend(P2, tmp, C);
                for (i64 c = 0; c < C; ++c)
                    tmp[c] = -scale[g * C + c] * (k1[g * C + c]
                                                  - k2[g * C + c] * mu[g * C + c] * istd[g * C + c]);
                extend(P3, tmp, C);
            }
            for (i64 c = 0; c < C + V; ++c) fs[c] = fx[c] = 0.0f;
            i64 off = gb * T * C, n = T * C, i = 0, c0 = 0;
            const float *restrict zr = z + off;
            const float *gr = gin ? gin + off : NULL; /* may alias gz (gate == 0) */
            const float *restrict xr = gate ? x + off : NULL;
            float *gzr = pass == 1 ? gz + off : NULL;
            float *restrict gdr = (pass == 1 && gate) ? gdirect + off : NULL;
            if (pass == 0) {
                if (!gate) BACKWARD_LOOP(0, 0, FROM_GIN);
                else if (gr) BACKWARD_LOOP(0, 1, FROM_GIN);
                else BACKWARD_LOOP(0, 1, NO_GIN);
            } else {
                if (!gate) BACKWARD_LOOP(1, 0, FROM_GIN);
                else if (gr) BACKWARD_LOOP(1, 1, FROM_GIN);
                else BACKWARD_LOOP(1, 1, NO_GIN);
            }
            if (pass == 0) {
                double *ps = part + (i64)tid * 2 * width + g * C, *px = ps + width;
                for (i64 c = 0; c < C; ++c) {
                    ps[c] += fs[c] + (c < V ? fs[c + C] : 0.0f);
                    px[c] += fx[c] + (c < V ? fx[c + C] : 0.0f);
                }
            }
        }
    }
    if (pass == 0) total_partials(part, used, width, sum_gu, sum_gx);
    return 0;
}

/* BatchNorm's per-(g, c) factors from the statistics, and the per-(g, b, c) coefficients
 * of the folded BatchNorm + dropout:  y = A z + S,  A = gain * m,  S = (beta - mu * gain) * m,
 * gain = gamma * istd. With batch statistics mu and var come from sum and sq over count
 * rows (var biased, clamped at 0); otherwise mu = running mean - conv bias (mu_in) and
 * var = running var (var_in). gamma, beta, mask (G, B, C) and mu_in, var_in may be NULL
 * where unused. Writes mu, var, istd, scale (= gain) per (g, c) and A, S, M per (g, b, c)
 * (M: the dropout factors, ones without a mask). */
void tab_coefficients(int batch_stats, const double *sum, const double *sq, i64 count,
                      const float *mu_in, const float *var_in, const float *gamma,
                      const float *beta, const float *eps, const float *mask, float *mu,
                      float *var, float *istd, float *scale, float *A, float *S, float *M,
                      i64 G, i64 B, i64 C) {
    for (i64 g = 0; g < G; ++g)
        for (i64 c = 0; c < C; ++c) {
            i64 gc = g * C + c;
            double m, v;
            if (batch_stats) {
                m = sum[gc] / (double)count;
                v = sq[gc] / (double)count - m * m;
                v = v > 0.0 ? v : 0.0;
            } else {
                m = mu_in[gc];
                v = var_in[gc];
            }
            float mf = (float)m, vf = (float)v;
            float is = 1.0f / sqrtf(vf + eps[g]);
            float gain = gamma ? gamma[gc] * is : is;
            float shift = (beta ? beta[gc] : 0.0f) - mf * gain;
            mu[gc] = mf;
            var[gc] = vf;
            istd[gc] = is;
            scale[gc] = gain;
            for (i64 b = 0; b < B; ++b) {
                i64 gbc = (g * B + b) * C + c;
                float f = mask ? mask[gbc] : 1.0f;
                A[gbc] = gain * f;
                S[gbc] = shift * f;
                M[gbc] = f;
            }
        }
}

/* After tab_backward's pass 0: k1 = sum_gu / count and k2 = sum_gx / count (zero with
 * running statistics), d gamma = sum_gx, d beta = sum_gu, and d conv bias = sum over rows
 * of gz = scale (sum_gu - count k1 - k2 sum xhat), sum xhat = (sum_z - count mu) istd. */
void tab_backward_factors(int batch_stats, const double *sum_gu, const double *sum_gx,
                          const double *sum_z, i64 count, const float *mu, const float *istd,
                          const float *scale, float *k1, float *k2, float *grad_gamma,
                          float *grad_beta, float *grad_bias, i64 GC) {
    for (i64 i = 0; i < GC; ++i) {
        grad_gamma[i] = (float)sum_gx[i];
        grad_beta[i] = (float)sum_gu[i];
        if (batch_stats) {
            double a = sum_gu[i] / (double)count, b = sum_gx[i] / (double)count;
            k1[i] = (float)a;
            k2[i] = (float)b;
            double sum_xhat = (sum_z[i] - (double)count * mu[i]) * istd[i];
            grad_bias[i] = (float)(scale[i] * (sum_gu[i] - (double)count * (float)a
                                               - (float)b * sum_xhat));
        } else {
            k1[i] = k2[i] = 0.0f;
            grad_bias[i] = (float)(scale[i] * sum_gu[i]);
        }
    }
}
