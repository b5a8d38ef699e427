/* The host path of the engine's sampling: one token for each of a step's rows, with
 * llama.cpp's chain (top_k, then top_p on the softmax at temperature 1, then min_p
 * relative to the best token, then a draw at the request's temperature).
 *
 * Why C and not numpy: on a GPU, or on the CPU with a small model, a decode step takes a
 * few milliseconds, and the numpy path spent 0.3 ms a row on a 128k vocabulary (top-p:
 * a softmax pass, a threshold pass, a sort, each a separate trip over memory with
 * Python between them).  No library offers llama.cpp's chain over many rows at once
 * without a full sort; llama.cpp's own CPU samplers take one row at a time and sort.
 * Here every row is a few passes over its logits with no sort of the vocabulary
 * (per-row costs measured on 128k-token rows of the random-weight stand-in, 2-core VM):
 *   - greedy: chunk maxima in one vectorised pass, then a scan of the best chunk;
 *   - top_k: one pass that skips any 64 logits whose maximum cannot enter the k best
 *     (a min-heap), then a sort of the k (~30 us);
 *   - top_p without top_k: the best logit, the total weight (one exp pass, no stores),
 *     the tokens within 10 of the best (weight e^-10: ~4,800 of 128k, widening when
 *     they hold less than top_p of the mass), and the nucleus among them by a histogram
 *     of their weights and a quickselect inside the one bin where it ends (order inside
 *     a nucleus does not change the draw) (~130 us, of which ~90 are the three passes);
 *   - min_p alone: the tokens within -log(min_p) of the best;
 *   - temperature alone: weights and per-block totals in one pass, the draw found by
 *     block, then inside it (~50 us).
 * Rows are shared over OpenMP threads (the pool ggml's decode just used, when the
 * engine thread calls both).  Each row draws with the uniform number the caller took
 * from that request's own generator, so the tokens do not depend on the thread count.
 * Logits of -inf (suppressed or masked tokens) get weight 0. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_sampler.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 32       /* independent accumulators: the compiler turns them into SIMD registers */
#define BLOCK 1024     /* tokens per partial total of the temperature-only path */
#define CHUNK 256      /* tokens per chunk of the argmax's first pass */
#define HEAD_SPREAD 10.0f /* first candidates of top_p: within 10 of the best logit, a weight of e^-10 */
#define ALL_SPREAD 88.0f  /* every token with any weight (exp_nonpositive is 0 below -87) */

typedef struct {
  float *weights;  /* n_vocab */
  int32_t *ids;    /* n_vocab */
  float *kept;     /* n_vocab: the candidates' logits, then their weights */
} scratch_t;

/* The largest of x[0..n) lane by lane (vectorised), then across the lanes. */
static float lanes_max(const float *x, int64_t n) {
  float m[LANES];
  for (int j = 0; j < LANES; j++) m[j] = -INFINITY;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int j = 0; j < LANES; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
  for (int width = LANES / 2; width > 0; width /= 2) /* a tree, which also vectorises */
    for (int j = 0; j < width; j++) m[j] = m[j + width] > m[j] ? m[j + width] : m[j];
  float best = m[0];
  for (; i < n; i++) best = x[i] > best ? x[i] : best;
  return best;
}

/* The first index of the largest logit (NaNs skipped): chunk maxima in one vectorised
 * pass, then a scan of the one chunk that holds the best. */
static int32_t argmax(const float *x, int64_t n) {
  float best = -INFINITY;
  int64_t best_chunk = 0;
  for (int64_t start = 0; start < n; start += CHUNK) {
    const float m = lanes_max(x + start, start + CHUNK < n ? CHUNK : n - start);
    if (m > best) {
      best = m;
      best_chunk = start;
    }
  }
  for (int64_t i = best_chunk; i < n; i++)
    if (x[i] == best) return (int32_t)i;
  return 0; /* only NaN rows */
}

/* Indices (and values) of x[0..n) that are >= floor, in order; chunks holding none
 * are skipped after one vectorised test.  Every store lands below n: a group's stores
 * start at m <= its own first index. */
static int64_t at_least(const float *x, int64_t n, float floor, int32_t *ids, float *values) {
  int64_t m = 0, i = 0;
#if defined(__AVX512F__)
  /* compress in a register, then a full store of 16 (its tail is overwritten by the next
   * group's, or lies past m within the group's own span): a compress straight
   * to memory is microcoded and slow on some cores */
  const __m512 bound = _mm512_set1_ps(floor);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= n; i += 16, index = _mm512_add_epi32(index, step)) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 hits = _mm512_cmp_ps_mask(v, bound, _CMP_GE_OQ);
    /* no branch: about half the groups of the stand-in's rows hold a hit, unpredictably */
    _mm512_storeu_ps(values + m, _mm512_maskz_compress_ps(hits, v));
    _mm512_storeu_si512((void *)(ids + m), _mm512_maskz_compress_epi32(hits, index));
    m += __builtin_popcount(hits);
  }
#else
  for (; i + LANES <= n; i += LANES) {
    int any = 0;
    for (int j = 0; j < LANES; j++) any |= x[i + j] >= floor;
    if (!any) continue;
    for (int j = 0; j < LANES; j++) { /* branch-free: write always, advance on a hit */
      ids[m] = (int32_t)(i + j);
      values[m] = x[i + j];
      m += x[i + j] >= floor;
    }
  }
#endif
  for (; i < n; i++)
    if (x[i] >= floor) {
      ids[m] = (int32_t)i;
      values[m++] = x[i];
    }
  return m;
}

/* e^x for x <= 0 to about 2 ulp, written so that loops over it vectorise; 0 below -87
 * (float's smallest normal), which covers -inf and NaN.  The selects vectorise without
 * AVX-512's masks only under -fno-trapping-math (CMakeLists.txt): measured on the
 * 2-core VM, 16 top-p rows took 4.2 ms with AVX2 without it, 1.4 ms with it. */
static inline float exp_nonpositive(float x) {
  const float clamped = x > -87.0f ? x : -87.0f;
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
  const float r = clamped - n * 0.693145751953125f - n * 1.428606765330187045e-6f;
  const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666667e-2f + r * (8.3333333e-3f + r * 1.3888889e-3f)))));
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return x > -87.0f ? p * scale : 0.0f;
}

/* weights[i] = exp((x[i] - best) * inv_t) for the whole row, the total of each BLOCK
 * into block_totals; returns the row's total. */
static double weigh_row(const float *x, int64_t n, float best, float inv_t, float *weights, double *block_totals) {
  double total = 0.0;
  for (int64_t start = 0, b = 0; start < n; start += BLOCK, b++) {
    const int64_t end = start + BLOCK < n ? start + BLOCK : n;
    float part[LANES] = {0};
    int64_t i = start;
    for (; i + LANES <= end; i += LANES)
      for (int j = 0; j < LANES; j++) {
        const float w = exp_nonpositive((x[i + j] - best) * inv_t);
        weights[i + j] = w;
        part[j] += w;
      }
    double sum = 0.0;
    for (int j = 0; j < LANES; j++) sum += part[j];
    for (; i < end; i++) {
      weights[i] = exp_nonpositive((x[i] - best) * inv_t);
      sum += weights[i];
    }
    block_totals[b] = sum;
    total += sum;
  }
  return total;
}

/* The row's total weight, sum of exp((x - best) * inv_t), storing nothing. */
static double row_total(const float *x, int64_t n, float best, float inv_t) {
  float part[LANES] = {0};
  double total = 0.0;
  int64_t i = 0;
  for (int64_t end = BLOCK; i + LANES <= n; end += BLOCK) { /* float partial sums of BLOCK tokens at most */
    for (; i + LANES <= n && i < end; i += LANES)
      for (int j = 0; j < LANES; j++) part[j] += exp_nonpositive((x[i + j] - best) * inv_t);
    for (int j = 0; j < LANES; j++) {
      total += part[j];
      part[j] = 0.0f;
    }
  }
  for (; i < n; i++) total += exp_nonpositive((x[i] - best) * inv_t);
  return total;
}

/* Keeps the candidates (ids, logits in values) whose logit is at least `bound`, turning
 * each logit into its weight exp(logit - best); returns how many, their mass in *mass. */
static int64_t weigh_candidates(int32_t *ids, float *values, int64_t m, float best, float bound, double *mass) {
  int64_t kept = 0;
  double sum = 0.0;
  for (int64_t i = 0; i < m; i++)
    if (values[i] >= bound) {
      ids[kept] = ids[i];
      values[kept] = exp_nonpositive(values[i] - best);
      sum += values[kept++];
    }
  *mass = sum;
  return kept;
}

/* The index where the running sum of w[0..n) first passes target; past the end by
 * rounding, the last index with any weight. */
static int64_t pick(const float *w, int64_t n, double target) {
  double running = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < n; i++) {
    if (w[i] > 0.0f) last = i;
    running += w[i];
    if (running > target) return i;
  }
  return last;
}

/* Draw among ids[0..m) with weights exp((x[id] - best) / t). */
static int32_t draw_among(const float *x, const int32_t *ids, int64_t m, float best, float t, double u, float *w) {
  double total = 0.0;
  for (int64_t i = 0; i < m; i++) {
    w[i] = exp_nonpositive((x[ids[i]] - best) / t);
    total += w[i];
  }
  if (!(total > 0.0)) { /* a row of -inf, +inf or NaN logits: no weights to draw by */
    int64_t heaviest = 0;
    for (int64_t i = 1; i < m; i++) heaviest = x[ids[i]] > x[ids[heaviest]] ? i : heaviest;
    return ids[heaviest];
  }
  return ids[pick(w, m, u * total)];
}

static void swap_pair(float *w, int32_t *ids, int64_t a, int64_t b) {
  const float tw = w[a];
  w[a] = w[b];
  w[b] = tw;
  const int32_t ti = ids[a];
  ids[a] = ids[b];
  ids[b] = ti;
}

/* Reorders (w, ids)[0..m) so that its first `returned` entries are the smallest set of
 * the heaviest weights whose sum reaches `need` (all m when none does): a quickselect. */
static int64_t select_nucleus(float *w, int32_t *ids, int64_t m, double need) {
  int64_t lo = 0, hi = m; /* [0, lo) is in, [hi, m) is out, [lo, hi) undecided */
  while (hi - lo > 32) {
    /* median of three as the pivot */
    const float a = w[lo], b = w[lo + (hi - lo) / 2], c = w[hi - 1];
    const float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
    /* three-way partition: heavier | equal | lighter */
    int64_t gt = lo, i = lo, lt = hi;
    double heavier = 0.0;
    while (i < lt) {
      if (w[i] > pivot) {
        heavier += w[i];
        swap_pair(w, ids, gt++, i++);
      } else if (w[i] < pivot) {
        swap_pair(w, ids, i, --lt);
      } else {
        i++;
      }
    }
    if (heavier >= need) {
      hi = gt;
      continue;
    }
    need -= heavier;
    const double equal = (double)pivot * (double)(lt - gt);
    if (equal >= need) {
      const int64_t take = (int64_t)ceil(need / (double)pivot);
      return gt + (take < 1 ? 1 : (take > lt - gt ? lt - gt : take));
    }
    need -= equal;
    lo = lt;
  }
  /* the few left: insertion sort, heaviest first, then walk */
  for (int64_t i = lo + 1; i < hi; i++)
    for (int64_t j = i; j > lo && w[j] > w[j - 1]; j--) swap_pair(w, ids, j, j - 1);
  double running = 0.0;
  for (int64_t i = lo; i < hi; i++) {
    running += w[i];
    if (running >= need) return i + 1;
  }
  return hi > 0 ? hi : m;
}

/* The same as select_nucleus, by a histogram first: weights (0, 1] binned by their
 * float bits (exponent and six mantissa bits: bins 1.1% wide, monotone in the weight),
 * the bin where the running mass reaches `need` found from the heaviest, and only that
 * bin's tokens selected one by one (a quickselect over all ~4,800 candidates of a
 * stand-in row took 48 us). */
#define WEIGHT_BINS 1024
static inline int32_t weight_bin(float w) {
  uint32_t bits;
  memcpy(&bits, &w, sizeof bits);
  const int32_t bin = (int32_t)((0x3f800000u >> 17) - (bits >> 17)); /* 0: weight 1 */
  return bin < 0 ? 0 : (bin >= WEIGHT_BINS ? WEIGHT_BINS - 1 : bin);
}

static int64_t nucleus(float *w, int32_t *ids, int64_t m, double need) {
  double mass[WEIGHT_BINS] = {0};
  for (int64_t i = 0; i < m; i++) mass[weight_bin(w[i])] += w[i];
  int32_t cut = 0;
  double before = 0.0;
  while (cut < WEIGHT_BINS && before + mass[cut] < need) before += mass[cut++];
  if (cut == WEIGHT_BINS) return m;
  int64_t heavier = 0; /* bins before the cut to the front, then the cut bin's tokens */
  for (int64_t i = 0; i < m; i++)
    if (weight_bin(w[i]) < cut) swap_pair(w, ids, heavier++, i);
  int64_t in_cut = heavier;
  for (int64_t i = heavier; i < m; i++)
    if (weight_bin(w[i]) == cut) swap_pair(w, ids, in_cut++, i);
  return heavier + select_nucleus(w + heavier, ids + heavier, in_cut - heavier, need - before);
}

/* top_k without a sort of the vocabulary: a min-heap of the k best seen so far. */
static void heap_sift_down(float *v, int32_t *ids, int64_t k, int64_t i) {
  for (;;) {
    int64_t smallest = i;
    const int64_t l = 2 * i + 1, r = l + 1;
    if (l < k && v[l] < v[smallest]) smallest = l;
    if (r < k && v[r] < v[smallest]) smallest = r;
    if (smallest == i) return;
    swap_pair(v, ids, i, smallest);
    i = smallest;
  }
}

static void heap_offer(float *v, int32_t *ids, int64_t k, float value, int32_t id) {
  if (value > v[0]) {
    v[0] = value;
    ids[0] = id;
    heap_sift_down(v, ids, k, 0);
  }
}

/* The k largest logits of x, best first, into (v, ids). */
static void top_k_of(const float *x, int64_t n, int64_t k, float *v, int32_t *ids) {
  for (int64_t i = 0; i < k; i++) {
    v[i] = x[i] == x[i] ? x[i] : -INFINITY; /* a NaN at the root would let nothing in */
    ids[i] = (int32_t)i;
  }
  for (int64_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(v, ids, k, i);
  int64_t i = k;
  for (; i < n && i % 64; i++) heap_offer(v, ids, k, x[i], (int32_t)i);
  for (; i + 64 <= n; i += 64)
    if (lanes_max(x + i, 64) > v[0])
      for (int j = 0; j < 64; j++) heap_offer(v, ids, k, x[i + j], (int32_t)(i + j));
  for (; i < n; i++) heap_offer(v, ids, k, x[i], (int32_t)i);
  /* heap sort: repeatedly move the smallest to the end, so the array ends best first */
  for (int64_t end = k - 1; end > 0; end--) {
    swap_pair(v, ids, 0, end);
    heap_sift_down(v, ids, end, 0);
  }
}

static int32_t sample_top_k(const float *x, int64_t n, int64_t k, float t, float top_p, float min_p, double u, scratch_t *s) {
  float *v = s->kept;
  int32_t *ids = s->ids;
  top_k_of(x, n, k, v, ids);
  const float best = v[0];
  int64_t keep = k;
  if (top_p > 0.0f && top_p < 1.0f) {
    double total = 0.0;
    for (int64_t i = 0; i < k; i++) total += s->weights[i] = exp_nonpositive(v[i] - best);
    double running = 0.0;
    for (int64_t i = 0; i < k; i++) {
      running += s->weights[i];
      if (running / total >= top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (min_p > 0.0f) {
    const float floor = logf(min_p);
    int64_t passing = 0;
    while (passing < keep && v[passing] - best >= floor) passing++;
    keep = passing > 0 ? passing : 1;
  }
  return draw_among(x, ids, keep, best, t, u, s->weights);
}

static int32_t sample_unbounded(const float *x, int64_t n, float t, float top_p, float min_p, double u, scratch_t *s) {
  const float best = lanes_max(x, n);
  if (top_p > 0.0f && top_p < 1.0f) {
    /* the nucleus lies among the heaviest tokens: first those within HEAD_SPREAD of the
     * best (weight e^-10), widening while they do not hold top_p of the mass */
    float spread = HEAD_SPREAD;
    const double need = (double)top_p * row_total(x, n, best, 1.0f);
    int64_t m = at_least(x, n, best - spread, s->ids, s->kept);
    double mass;
    m = weigh_candidates(s->ids, s->kept, m, best, best - spread, &mass);
    while (mass < need && spread < ALL_SPREAD) {
      spread = 2.0f * spread < ALL_SPREAD ? 2.0f * spread : ALL_SPREAD;
      m = at_least(x, n, best - spread, s->ids, s->kept);
      m = weigh_candidates(s->ids, s->kept, m, best, best - spread, &mass);
    }
    int64_t keep = nucleus(s->kept, s->ids, m, need);
    if (min_p > 0.0f) { /* relative to the best token, on the logits as llama.cpp compares */
      const float floor = logf(min_p);
      int64_t passing = 0;
      for (int64_t i = 0; i < keep; i++)
        if (x[s->ids[i]] - best >= floor) swap_pair(s->kept, s->ids, passing++, i);
      keep = passing > 0 ? passing : 1;
    }
    return draw_among(x, s->ids, keep, best, t, u, s->weights);
  }
  if (min_p > 0.0f) { /* the tokens with logit >= best + log(min_p), as llama.cpp keeps them */
    const int64_t m = at_least(x, n, best + logf(min_p), s->ids, s->kept);
    return draw_among(x, s->ids, m, best, t, u, s->weights);
  }
  /* temperature alone: the whole vocabulary */
  const int64_t blocks = (n + BLOCK - 1) / BLOCK;
  double block_totals[blocks];
  const double total = weigh_row(x, n, best, 1.0f / t, s->weights, block_totals);
  if (!(total > 0.0)) return argmax(x, n); /* a row of -inf, +inf or NaN logits */
  double target = u * total;
  int64_t chosen = -1, last_weighted = 0;
  for (int64_t b = 0; b < blocks && chosen < 0; b++) {
    if (block_totals[b] > 0.0) last_weighted = b;
    if (target < block_totals[b]) chosen = b;
    else target -= block_totals[b];
  }
  if (chosen < 0) { /* past the end by rounding: the last block with any weight */
    chosen = last_weighted;
    target = block_totals[chosen];
  }
  const int64_t start = chosen * BLOCK, end = start + BLOCK < n ? start + BLOCK : n;
  return (int32_t)(start + pick(s->weights + start, end - start, target));
}

/* One token per row.  rows: the logits; row i of the step is rows + row_index[i] *
 * row_stride.  temperature <= 0: greedy.  top_k <= 0 or >= n_vocab: no top_k.  u: a
 * uniform number in [0, 1) per row.  scratch: 3 * n_vocab floats per thread. */
void rocm_infer_sample_rows(const float *rows, int64_t row_stride, int64_t n_vocab, int64_t n_rows, const int64_t *row_index,
                            const float *temperature, const int32_t *top_k, const float *top_p, const float *min_p,
                            const double *u, int32_t *tokens, float *scratch, int32_t n_threads) {
#ifndef _OPENMP
  (void)n_threads; /* built without OpenMP: the rows run one after another */
#endif
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_threads > 1 && n_rows > 1)
  for (int64_t r = 0; r < n_rows; r++) {
    int thread = 0;
#ifdef _OPENMP
    thread = omp_get_thread_num();
#endif
    float *base = scratch + (int64_t)thread * 3 * n_vocab;
    scratch_t s = {base, (int32_t *)(base + n_vocab), base + 2 * n_vocab};
    const float *x = rows + row_index[r] * row_stride;
    if (!(temperature[r] > 0.0f) || isinf(1.0f / temperature[r])) /* a subnormal temperature is greedy too */
      tokens[r] = argmax(x, n_vocab);
    else if (top_k[r] > 0 && top_k[r] < n_vocab)
      tokens[r] = sample_top_k(x, n_vocab, top_k[r], temperature[r], top_p[r], min_p[r], u[r], &s);
    else
      tokens[r] = sample_unbounded(x, n_vocab, temperature[r], top_p[r], min_p[r], u[r], &s);
  }
}
