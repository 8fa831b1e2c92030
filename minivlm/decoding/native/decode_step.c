/* The CPU decoder's matrix products and its whole decode step, in C (fp32, and int8 on AVX-512 VNNI).

   Why: a decode step streams every weight once (538 MB at full size) and does little else. oneDNN reads a
   step's small matrices at ~10-13 GB/s on one core here, and PyTorch adds ~420 small kernels a step around
   them; llama.cpp's step, one call that runs its graph, was 1.2-1.5x faster than ours at batch 1. This file
   does what it does: one call per step, with products in a layout built for few rows.

   Layout ("blocked"): an (N, K) matrix is stored as N/16 blocks, block j holding outputs 16j..16j+15 as K
   vectors of 16 floats (k-major). A product then loads one vector of weights per k and multiplies it by each
   row's x[k] broadcast: no horizontal sums, every weight read once per group of up to 8 rows, and with more
   rows than 8 a tile of blocks is reused from the cache by every group (prefill). Measured against oneDNN on
   its own packed weights, one thread, all of a step's products: 1.3x faster at batch 1, 1.15x at 8, equal at
   207 rows (prefill). Written with GCC's vector extensions: AVX-512 where the CPU has it, AVX2 otherwise.

   Threads: the step runs as one parallel region, each thread on its share of every product's blocks (and of
   the attention's rows x KV heads), with a barrier between phases, as llama.cpp does (OpenMP: below).

   Arithmetic: fp32 throughout (int8: below); sums run in another order than oneDNN's, so results differ by
   float rounding only (~1e-6 relative). */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define INLINE static inline __attribute__((always_inline))
#define MAX_THREADS 64

/* ---------------------------------------------------------------------------------------------------------
   Products. Y[b][16j + l] = scale[b] * sum_k W[j][k][l] X[b][k] (+ Y[b][16j + l] when add), blocks j in
   [j0, j0 + NB), rows b < RB: NB x RB accumulators live in registers. */
INLINE void tile(const float *W, int K, const float *X, int64_t ldx, float *Y, int64_t ldy, int j0, int NB, int RB,
                 const float *scale, int add) {
    v16 acc[4][8];
    for (int j = 0; j < NB; j++)
        for (int b = 0; b < RB; b++) acc[j][b] = (v16){0};
    const float *w = W + (int64_t)j0 * K * 16;
    for (int k = 0; k < K; k++) {
        v16 wv[4];
        for (int j = 0; j < NB; j++) wv[j] = *(const v16 *)(w + ((int64_t)j * K + k) * 16);
        for (int b = 0; b < RB; b++) {
            float xs = X[b * ldx + k];
            for (int j = 0; j < NB; j++) acc[j][b] += wv[j] * xs;
        }
    }
    for (int j = 0; j < NB; j++)
        for (int b = 0; b < RB; b++) {
            v16 *y = (v16 *)(Y + b * ldy + (int64_t)(j0 + j) * 16);
            v16 r = scale ? acc[j][b] * scale[b] : acc[j][b];
            *y = add ? *y + r : r;
        }
}

/* Blocks [j0, j1) with NB blocks a tile (RB fixed), the remainder one block at a time. */
#define TILES(NB, RB)                                                                                          \
    {                                                                                                          \
        int j = j0;                                                                                            \
        for (; j + NB <= j1; j += NB) tile(W, K, X, ldx, Y, ldy, j, NB, RB, scale, add);                      \
        for (; j < j1; j++) tile(W, K, X, ldx, Y, ldy, j, 1, RB, scale, add);                                \
    }

/* Up to 8 rows; the tile shapes keep <= 16 accumulators (measured: 4 blocks at batch 1 reads fastest). */
#define BY_ROWS(TILES_OF)                                                                                      \
    switch (rows) {                                                                                            \
    case 1: TILES_OF(4, 1) break;                                                                              \
    case 2: TILES_OF(4, 2) break;                                                                              \
    case 3: TILES_OF(4, 3) break;                                                                              \
    case 4: TILES_OF(3, 4) break;                                                                              \
    case 5: TILES_OF(2, 5) break;                                                                              \
    case 6: TILES_OF(2, 6) break;                                                                              \
    case 7: TILES_OF(2, 7) break;                                                                              \
    default: TILES_OF(2, 8) break;                                                                             \
    }

static void rows8(const float *W, int K, const float *X, int64_t ldx, int rows, float *Y, int64_t ldy, int j0,
                  int j1, const float *scale, int add) {
    BY_ROWS(TILES)
}

/* Y (B, ldy) = X (B, ldx) @ W^T over blocks [j0, j1). With more than 8 rows, three blocks' weights (~110 KB
   at K = 576) are read once from memory and then from the cache by every group of 8 rows. */
static void product(const float *W, int K, const float *X, int64_t ldx, int B, float *Y, int64_t ldy, int j0,
                    int j1, const float *scale, int add) {
    if (B <= 8) {
        rows8(W, K, X, ldx, B, Y, ldy, j0, j1, scale, add);
        return;
    }
    for (int j = j0; j < j1; j += 3) {
        int je = j + 3 < j1 ? j + 3 : j1;
        for (int b = 0; b < B; b += 8) {
            const float *x = X + b * ldx, *s = scale ? scale + b : 0;
            float *y = Y + b * ldy;
            if (B - b >= 8 && je - j == 3) tile(W, K, x, ldx, y, ldy, j, 3, 8, s, add);
            else rows8(W, K, x, ldx, B - b < 8 ? B - b : 8, y, ldy, j, je, s, add);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------
   Threads: OpenMP, so a product or a step runs on the same thread pool as torch's kernels. torch's wheel
   brings its own libgomp.so.1 and this library, loaded after torch, binds to that one; a pool of our own
   would compete for the cores with torch's OpenMP threads, which spin for a while after every kernel (a
   2-thread prefill took 1.9x as long that way). */
typedef void (*job_fn)(void *arg, int tid, int n);

static void run(job_fn job, void *arg, int threads) {
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        job(arg, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    job(arg, 0, 1);
}

static inline void barrier(int n) {
#ifdef _OPENMP
    if (n > 1) {
#pragma omp barrier
    }
#endif
    (void)n;
}

/* Thread tid's share [*lo, *hi) of `count` items, in multiples of `unit`. */
static void share(int count, int unit, int tid, int n, int *lo, int *hi) {
    int units = (count + unit - 1) / unit;
    *lo = (int)((int64_t)units * tid / n) * unit;
    *hi = (int)((int64_t)units * (tid + 1) / n) * unit;
    if (*hi > count) *hi = count;
}

/* ---------------------------------------------------------------------------------------------------------
   A matrix as the decoder holds it: fp32 blocked (scale NULL), or int8 (the opt-in precision): weights
   quantized per output row (symmetric, scale = max |w| / 127) and each product's input per row (scale =
   max |x| / 127), multiplied in int32 by AVX-512 VNNI's vpdpbusd (64 multiply-adds an instruction). vpdpbusd
   takes unsigned x: x + 128 goes in and 128 * sum_k w (kept per row) comes off. int8 layout: block j holds
   outputs 16j..16j+15 as kp/4 groups of 16 x 4 bytes, so one load is one group of 4 k's weights. */
typedef struct {
    const void *w;
    const float *scale;                        /* (rows rounded up to 16,): int8 only */
    const int32_t *sum128;                     /* 128 x each row's sum of quantized weights: int8 only */
    int k, kp;                                 /* inputs; int8: padded to a multiple of 4 */
} matrix;

int vlm_has_int8(void) {
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

/* Rows of X -> x / scale rounded, + 128 (padding k's: 128, i.e. 0), and each row's scale. */
static void quantize_rows(const float *X, int64_t ldx, int B, int K, int kp, uint8_t *out, float *xscale) {
    for (int b = 0; b < B; b++) {
        const float *x = X + b * ldx;
        float top = 0;
        for (int k = 0; k < K; k++) top = fmaxf(top, fabsf(x[k]));
        float inverse = top > 0 ? 127.0f / top : 0;
        uint8_t *q = out + (int64_t)b * kp;
        for (int k = 0; k < K; k++) q[k] = (uint8_t)(128 + (int)lrintf(x[k] * inverse));
        for (int k = K; k < kp; k++) q[k] = 128;
        xscale[b] = top / 127.0f;
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512F__)
#include <immintrin.h>

INLINE void tile_q8(const matrix *mat, const uint8_t *X, const float *xscale, float *Y, int64_t ldy, int j0, int NB,
                    int RB, const float *scale, int add) {
    __m512i acc[4][8];
    int groups = mat->kp / 4;
    for (int j = 0; j < NB; j++)
        for (int b = 0; b < RB; b++) acc[j][b] = _mm512_setzero_si512();
    const int8_t *w = (const int8_t *)mat->w + (int64_t)j0 * groups * 64;
    for (int g = 0; g < groups; g++) {
        __m512i wv[4];
        for (int j = 0; j < NB; j++) wv[j] = _mm512_loadu_si512(w + ((int64_t)j * groups + g) * 64);
        for (int b = 0; b < RB; b++) {
            int32_t four;
            memcpy(&four, X + (int64_t)b * mat->kp + 4 * g, 4);
            __m512i xb = _mm512_set1_epi32(four);
            for (int j = 0; j < NB; j++) acc[j][b] = _mm512_dpbusd_epi32(acc[j][b], xb, wv[j]);
        }
    }
    for (int j = 0; j < NB; j++) {
        int o = (j0 + j) * 16;
        __m512 ws = _mm512_loadu_ps(mat->scale + o);
        __m512i sum = _mm512_loadu_si512(mat->sum128 + o);
        for (int b = 0; b < RB; b++) {
            __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[j][b], sum)), ws);
            r = _mm512_mul_ps(r, _mm512_set1_ps(xscale[b] * (scale ? scale[b] : 1.0f)));
            float *y = Y + b * ldy + o;
            if (add) r = _mm512_add_ps(r, _mm512_loadu_ps(y));
            _mm512_storeu_ps(y, r);
        }
    }
}

#define TILES_Q8(NB, RB)                                                                                       \
    {                                                                                                          \
        int j = j0;                                                                                            \
        for (; j + NB <= j1; j += NB) tile_q8(mat, X, xscale, Y, ldy, j, NB, RB, scale, add);                 \
        for (; j < j1; j++) tile_q8(mat, X, xscale, Y, ldy, j, 1, RB, scale, add);                           \
    }

static void rows8_q8(const matrix *mat, const uint8_t *X, const float *xscale, int rows, float *Y, int64_t ldy,
                     int j0, int j1, const float *scale, int add) {
    BY_ROWS(TILES_Q8)
}

/* X already quantized (B rows of kp bytes). */
static void product_q8(const matrix *mat, const uint8_t *X, const float *xscale, int B, float *Y, int64_t ldy,
                       int j0, int j1, const float *scale, int add) {
    if (B <= 8) {
        rows8_q8(mat, X, xscale, B, Y, ldy, j0, j1, scale, add);
        return;
    }
    for (int j = j0; j < j1; j += 3) {
        int je = j + 3 < j1 ? j + 3 : j1;
        for (int b = 0; b < B; b += 8)
            rows8_q8(mat, X + (int64_t)b * mat->kp, xscale + b, B - b < 8 ? B - b : 8, Y + b * ldy, ldy, j, je,
                     scale ? scale + b : 0, add);
    }
}
#else
static void product_q8(const matrix *mat, const uint8_t *X, const float *xscale, int B, float *Y, int64_t ldy,
                       int j0, int j1, const float *scale, int add) {
    (void)mat, (void)X, (void)xscale, (void)B, (void)Y, (void)ldy, (void)j0, (void)j1, (void)scale, (void)add;
    abort();                                   /* Python asks vlm_has_int8() first */
}
#endif

/* Y = X @ W^T over blocks [j0, j1) in the matrix's format; int8 quantizes X into `bytes` (B x kp) first. */
static void apply(const matrix *mat, const float *X, int64_t ldx, int B, float *Y, int64_t ldy, int j0, int j1,
                  const float *scale, int add, uint8_t *bytes, float *xscale) {
    if (!mat->scale) {
        product(mat->w, mat->k, X, ldx, B, Y, ldy, j0, j1, scale, add);
        return;
    }
    quantize_rows(X, ldx, B, mat->k, mat->kp, bytes, xscale);
    product_q8(mat, bytes, xscale, B, Y, ldy, j0, j1, scale, add);
}

/* ---------------------------------------------------------------------------------------------------------
   A product on its own (prefill's, and the torch-driven path's): Y = X @ W^T, (B, K) -> (B, N), N a
   multiple of 16. */
typedef struct {
    const matrix *mat;
    int N, B;
    const float *X;
    int64_t ldx;
    float *Y;
    int64_t ldy;
    const uint8_t *bytes;                      /* int8: X quantized */
    const float *xscale;
} product_args;

static void product_job(void *p, int tid, int n) {
    product_args *a = p;
    int lo, hi;
    share(a->N / 16, 1, tid, n, &lo, &hi);
    if (a->mat->scale) product_q8(a->mat, a->bytes, a->xscale, a->B, a->Y, a->ldy, lo, hi, 0, 0);
    else product(a->mat->w, a->mat->k, a->X, a->ldx, a->B, a->Y, a->ldy, lo, hi, 0, 0);
}

/* 0, or -1 when out of memory (int8's quantized input). */
int vlm_product(const matrix *mat, int N, const float *X, int64_t ldx, int B, float *Y, int64_t ldy, int threads) {
    product_args a = {mat, N, B, X, ldx, Y, ldy, 0, 0};
    uint8_t *bytes = 0;
    float *xscale = 0;
    if (mat->scale) {
        bytes = malloc((size_t)B * mat->kp), xscale = malloc((size_t)B * sizeof(float));
        if (!bytes || !xscale) {
            free(bytes), free(xscale);
            return -1;
        }
        quantize_rows(X, ldx, B, mat->k, mat->kp, bytes, xscale);
        a.bytes = bytes, a.xscale = xscale;
    }
    run(product_job, &a, threads);
    free(bytes), free(xscale);
    return 0;
}

static inline int padded(int n) { return (n + 15) / 16 * 16; }       /* a blocked matrix's rows */

/* ---------------------------------------------------------------------------------------------------------
   The decode step. Weights as LlamaDecoder holds them: RMSNorm gains (and sqrt(D)) folded into the next
   matrix, q/k rows permuted so RoPE rotates adjacent pairs, gate then up in one matrix, the lm_head with the
   final norm folded in. The cache is the decoder's KVCache: per layer (rows, 2 KV, capacity, hd), k heads
   then v heads. */
typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, vocab;
    float eps_d;                               /* norm eps x dim: x * rsqrt(sum(x^2) + eps D) */
    const float *embed;                        /* (V, D) row-major */
    const matrix *lm_head;
    const matrix *layers;                      /* per layer: qkv, o, gate_up, down */
    const float *rotations;                    /* (positions, hd/2) complex: cos, sin */
} model;

typedef struct {
    const model *m;
    int B;
    const int64_t *tokens, *positions;         /* (B,) */
    float *const *kv;                          /* per layer */
    int64_t row_stride, head_stride;           /* in floats; a column is head_dim floats */
    int start, column;                         /* attend to [start, column]; write at column */
    const float *bias;                         /* (B, bias_stride): -inf on padding */
    int64_t bias_stride;
    float *logits;                             /* (B, V) */
    /* scratch */
    float *x, *qkv, *att, *gate_up, *h, *inv_rms, *scores, *xscale;
    uint8_t *bytes;                            /* int8: each thread's quantized input, B x max_k bytes */
    int max_k;
} step_args;

/* 1 / rms per row, up to the sqrt(D) the matrices hold: rsqrt(sum(x^2) + eps D). Every thread computes it
   (D multiply-adds a row) rather than wait at one more barrier. */
static void inverse_rms(const float *x, int B, int D, float eps_d, float *out) {
    for (int b = 0; b < B; b++) {
        float sum = 0;
        for (int i = 0; i < D; i++) sum += x[(int64_t)b * D + i] * x[(int64_t)b * D + i];
        out[b] = 1.0f / sqrtf(sum + eps_d);
    }
}

/* RoPE on one head in place: adjacent pairs times (cos + i sin). */
static void rotate(float *head, const float *rot, int half) {
    for (int i = 0; i < half; i++) {
        float x0 = head[2 * i], x1 = head[2 * i + 1], c = rot[2 * i], s = rot[2 * i + 1];
        head[2 * i] = x0 * c - x1 * s;
        head[2 * i + 1] = x0 * s + x1 * c;
    }
}

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

INLINE float hsum(v16 v) {
    v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
           + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

typedef int32_t v16i __attribute__((vector_size(64)));

/* e^x on 16 lanes (Cephes' expf: 2^n times a degree-6 polynomial on [-ln2/2, ln2/2], ~1 ulp); 0 below
   -87.3 (-inf included), as expf. glibc's vector expf needs -ffast-math, which would also assume no -inf. */
INLINE v16 vexp(v16 x) {
    const v16 hi = (v16){0} + 88.3762626647949f;
    v16i over = x > hi, under = x < -87.33654f;
    x = (v16)((over & (v16i)hi) | (~over & (v16i)x));
    x = (v16)(~under & (v16i)x);                                          /* 0 where the result is 0 anyway */
    v16 n = x * 1.44269504088896341f + 12582912.0f - 12582912.0f;        /* round to nearest */
    v16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    v16 p = (v16){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v16 y = p * r * r + r + 1.0f;
    v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
    return (v16)(~under & (v16i)(y * (v16)bits));
}

/* Vectorised by hand: without -ffast-math the compiler keeps a float sum in order, one lane at a time. */
INLINE float dot(const float *a, const float *b, int n) {
    int i = 0;
    float tail = 0;
    if (n >= 16) {
        v16 acc = *(const v16 *)a * *(const v16 *)b;
        for (i = 16; i + 16 <= n; i += 16) acc += *(const v16 *)(a + i) * *(const v16 *)(b + i);
        tail = hsum(acc);
    }
    for (; i < n; i++) tail += a[i] * b[i];
    return tail;
}

INLINE void axpy(float alpha, const float *x, float *y, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) *(v16 *)(y + i) += *(const v16 *)(x + i) * alpha;
    for (; i < n; i++) y[i] += alpha * x[i];
}

/* Row b's KV head g: rotate and store its key and value at `column`, then attend with its query heads. */
static void attend(step_args *a, int layer, int b, int g, float *scores) {
    const model *m = a->m;
    int hd = m->head_dim, H = m->n_heads, KV = m->n_kv_heads, G = H / KV, width = a->column - a->start + 1;
    float *row = a->qkv + (int64_t)b * padded((H + 2 * KV) * hd);
    const float *rot = m->rotations + a->positions[b] * hd;          /* hd/2 complex = hd floats */
    float *cache = a->kv[layer] + b * a->row_stride;
    float *k_head = cache + g * a->head_stride, *v_head = cache + (KV + g) * a->head_stride;
    float *k_new = row + (H + g) * hd, *v_new = row + (H + KV + g) * hd;
    rotate(k_new, rot, hd / 2);
    memcpy(k_head + (int64_t)a->column * hd, k_new, hd * sizeof(float));
    memcpy(v_head + (int64_t)a->column * hd, v_new, hd * sizeof(float));
    const float *bias = a->bias + b * a->bias_stride + a->start;
    float scale = 1.0f / sqrtf((float)hd);
    for (int q_i = 0; q_i < G; q_i++) {
        int head = g * G + q_i;
        float *q = row + head * hd, *out = a->att + ((int64_t)b * H + head) * hd;
        rotate(q, rot, hd / 2);
        float top = -INFINITY;
        for (int c = 0; c < width; c++) {
            const float *key = k_head + (int64_t)(a->start + c) * hd;
            scores[c] = dot(q, key, hd) * scale + bias[c];
            if (scores[c] > top) top = scores[c];
        }
        float total = 0;
        int c = 0;
        for (; c + 16 <= width; c += 16) {
            v16 e = vexp(*(v16 *)(scores + c) - top);
            *(v16 *)(scores + c) = e;
            total += hsum(e);
        }
        for (; c < width; c++) total += scores[c] = expf(scores[c] - top);
        for (int i = 0; i < hd; i++) out[i] = 0;
        for (int c = 0; c < width; c++) axpy(scores[c] / total, v_head + (int64_t)(a->start + c) * hd, out, hd);
    }
}

static void step_job(void *p, int tid, int n) {
    step_args *a = p;
    const model *m = a->m;
    int B = a->B, D = m->dim, H = m->n_heads, KV = m->n_kv_heads, hd = m->head_dim, I = m->hidden;
    int qkv_ld = padded((H + 2 * KV) * hd), gu_ld = padded(2 * I), lo, hi;
    float *inv_rms = a->inv_rms + tid * B, *scores = a->scores + (int64_t)tid * (a->column - a->start + 1);
    float *xscale = a->xscale + tid * B;
    uint8_t *bytes = a->bytes + (int64_t)tid * B * a->max_k;
    if (tid == 0)
        for (int b = 0; b < B; b++) memcpy(a->x + (int64_t)b * D, m->embed + a->tokens[b] * D, D * sizeof(float));
    barrier(n);
    for (int layer = 0; layer < m->n_layers; layer++) {
        const matrix *mats = m->layers + 4 * layer;
        inverse_rms(a->x, B, D, m->eps_d, inv_rms);
        share(qkv_ld / 16, 1, tid, n, &lo, &hi);
        apply(&mats[0], a->x, D, B, a->qkv, qkv_ld, lo, hi, inv_rms, 0, bytes, xscale);
        barrier(n);
        share(B * KV, 1, tid, n, &lo, &hi);
        for (int i = lo; i < hi; i++) attend(a, layer, i / KV, i % KV, scores);
        barrier(n);
        share(D / 16, 1, tid, n, &lo, &hi);
        apply(&mats[1], a->att, H * hd, B, a->x, D, lo, hi, 0, 1, bytes, xscale);
        barrier(n);
        inverse_rms(a->x, B, D, m->eps_d, inv_rms);
        share(gu_ld / 16, 1, tid, n, &lo, &hi);
        apply(&mats[2], a->x, D, B, a->gate_up, gu_ld, lo, hi, inv_rms, 0, bytes, xscale);
        barrier(n);
        share(I, 16, tid, n, &lo, &hi);                       /* h = silu(gate) * up */
        for (int b = 0; b < B; b++) {
            const float *gate = a->gate_up + (int64_t)b * gu_ld, *up = gate + I;
            float *h = a->h + (int64_t)b * I;
            int i = lo;
            for (; i + 16 <= hi; i += 16) {
                v16 g = *(const v16 *)(gate + i);
                *(v16 *)(h + i) = g / (1.0f + vexp(-g)) * *(const v16 *)(up + i);
            }
            for (; i < hi; i++) h[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
        }
        barrier(n);
        share(D / 16, 1, tid, n, &lo, &hi);
        apply(&mats[3], a->h, I, B, a->x, D, lo, hi, 0, 1, bytes, xscale);
        barrier(n);
    }
    inverse_rms(a->x, B, D, m->eps_d, inv_rms);
    share(padded(m->vocab) / 16, 1, tid, n, &lo, &hi);
    apply(m->lm_head, a->x, D, B, a->logits, padded(m->vocab), lo, hi, inv_rms, 0, bytes, xscale);
}

/* One decode step for B rows: logits (B, V rounded up to 16); the model's dim must be a multiple of 16.
   Writes each row's key/value at `column`. 0, or -1 when out of memory for scratch. */
int vlm_step(const model *m, int B, const int64_t *tokens, const int64_t *positions, float *const *kv,
             int64_t row_stride, int64_t head_stride, int start, int column, const float *bias, int64_t bias_stride,
             float *logits, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int D = m->dim, I = m->hidden, H = m->n_heads, hd = m->head_dim, width = column - start + 1;
    int qkv_ld = padded((H + 2 * m->n_kv_heads) * hd), gu_ld = padded(2 * I), max_k = 0;
    /* int8 matrices quantize their input into per-thread bytes; fp32 ones need none */
    for (int i = 0; i <= 4 * m->n_layers; i++) {
        const matrix *mat = i < 4 * m->n_layers ? &m->layers[i] : m->lm_head;
        if (mat->scale && mat->kp > max_k) max_k = mat->kp;
    }
    /* per-thread areas for the threads asked for: OpenMP never runs more than num_threads */
    int64_t floats = (int64_t)B * (D + qkv_ld + H * hd + gu_ld + I) + (int64_t)threads * (2 * B + width)
                     + ((int64_t)threads * B * max_k + 3) / 4;
    float *scratch = aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64);
    if (!scratch) return -1;
    step_args a = {m, B, tokens, positions, kv, row_stride, head_stride, start, column, bias, bias_stride, logits};
    a.x = scratch;
    a.qkv = a.x + (int64_t)B * D;
    a.att = a.qkv + (int64_t)B * qkv_ld;
    a.gate_up = a.att + (int64_t)B * H * hd;
    a.h = a.gate_up + (int64_t)B * gu_ld;
    a.inv_rms = a.h + (int64_t)B * I;
    a.xscale = a.inv_rms + (int64_t)threads * B;
    a.scores = a.xscale + (int64_t)threads * B;
    a.bytes = (uint8_t *)(a.scores + (int64_t)threads * width);
    a.max_k = max_k;
    run(step_job, &a, threads);
    free(scratch);
    return 0;
}
