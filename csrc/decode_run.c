/* A run of plain decode steps in one call: fill the batch, llama_decode, sample every
 * row, feed the tokens back, and again, without returning to Python between steps.
 *
 * Why: where a decode step takes a few milliseconds (a GPU; the random-weight stand-in on
 * a CPU), the engine's Python around each llama_decode (planning, filling the batch,
 * recording the tokens, waking each consumer thread) costs a share of every step that
 * llama-batched-bench, which has no Python, never pays.  While every running request is
 * plain (no penalty or logit bias sampled on the host, no structured output, no stop
 * string or stop token, no log-probabilities) and no waiting request can be admitted, a step's work needs nothing
 * Python knows: this loop does it, and Python records the run's tokens afterwards, with
 * the same effect as recording them step by step.  A row with a device chain
 * (llama_set_sampler: sampled in the decode graph) takes its token from
 * llama_get_sampled_token_ith; the other rows are sampled here from the logits.
 *
 * A run ends after the step in which any row samples an end-of-generation token (one
 * that ends it: not with ignore_eos), after max_steps (the caller makes that the fewest
 * tokens any row may still generate, so length ends a run too), once it has taken
 * max_seconds (streams get their tokens at least that often; a deadline is near), or
 * once *interrupt is set (a request was submitted or cancelled, the engine was called
 * or closed): all of those need the engine's Python.  Rows are never dropped from a
 * run, so every row's tokens are the same as step-by-step decoding would give. */

#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c11 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "host_sampler.h"
#include "llama.h"

typedef struct {
  /* in */
  int32_t n_rows;
  int32_t max_steps;
  double max_seconds;
  int64_t n_vocab;
  const int32_t *seq_ids;      /* n_rows */
  const int32_t *first_tokens; /* n_rows: each row's token not yet in its cells */
  const int32_t *first_pos;    /* n_rows: that token's position */
  const uint8_t *ends_row;     /* n_rows: 1 where an end-of-generation token ends the row */
  const uint8_t *eog;          /* n_vocab: 1 for the end-of-generation tokens */
  const int64_t *suppressed;   /* ids that are -inf in every host row before it is sampled */
  int64_t n_suppressed;
  int32_t n_host;              /* rows sampled here, from the logits */
  const int64_t *host_rows;    /* n_host: their row numbers, ascending */
  const float *temperature;    /* n_host each: their sampling settings */
  const int32_t *top_k;
  const float *top_p;
  const float *min_p;
  const double *uniforms;      /* max_steps * n_host, step after step: their draws */
  int32_t *host_tokens;        /* n_host: a step's host tokens, before they go to their rows */
  int32_t n_device;            /* rows with a device chain */
  const int32_t *device_rows;  /* n_device: their row numbers */
  float *scratch;              /* what rocm_infer_sample_rows needs for n_threads */
  int32_t n_threads;
  const int32_t *interrupt;    /* read after every step */
  /* out */
  int32_t *tokens;             /* max_steps * n_rows, step after step */
  int32_t steps;               /* steps decoded and sampled */
  double decode_seconds;       /* in llama_decode and the logits' read-back */
  double sample_seconds;
} rocm_infer_run_t;

/* The struct's size as this library was compiled: host_library.py compares it with its
 * ctypes mirror (RunArgs), so Python sources newer or older than the built library fail
 * with a message at load instead of writing past the struct. */
size_t rocm_infer_run_size(void) { return sizeof(rocm_infer_run_t); }

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define ROCM_INFER_RUN_NO_LOGITS (-100) /* decode_run.py: RUN_NO_LOGITS */
#define ROCM_INFER_RUN_NO_TOKEN (-101)  /* decode_run.py: RUN_NO_TOKEN */

/* Returns 0, or the code of the llama_decode that failed (run->steps stops before it;
 * ROCM_INFER_RUN_NO_LOGITS when the logits could not be read, ROCM_INFER_RUN_NO_TOKEN
 * when a device row has no sampled token).  batch: capacity >= n_rows, one seq_id slot
 * per token. */
int32_t rocm_infer_decode_run(struct llama_context *ctx, struct llama_batch *batch, rocm_infer_run_t *run) {
  const int32_t n = run->n_rows;
  const double started = seconds_now();
  run->steps = 0;
  run->decode_seconds = 0.0;
  run->sample_seconds = 0.0;
  for (int32_t step = 0; step < run->max_steps; step++) {
    const int32_t *feed = step == 0 ? run->first_tokens : run->tokens + (int64_t)(step - 1) * n;
    for (int32_t r = 0; r < n; r++) {
      batch->token[r] = feed[r];
      batch->pos[r] = run->first_pos[r] + step;
      batch->n_seq_id[r] = 1;
      batch->seq_id[r][0] = run->seq_ids[r];
      batch->logits[r] = 1;
    }
    batch->n_tokens = n;
    const double decode_started = seconds_now();
    const int32_t rc = llama_decode(ctx, *batch);
    if (rc != 0) return rc;
    /* both wait for the device; llama.cpp copies the logits (every row's) only when some row is a host row */
    float *logits = run->n_host > 0 ? llama_get_logits(ctx) : NULL;
    if (run->n_host == 0) llama_synchronize(ctx);
    const double decoded = seconds_now();
    run->decode_seconds += decoded - decode_started;
    if (run->n_host > 0 && logits == NULL) return ROCM_INFER_RUN_NO_LOGITS;
    int32_t *chosen = run->tokens + (int64_t)step * n;
    for (int32_t d = 0; d < run->n_device; d++) {
      const llama_token token = llama_get_sampled_token_ith(ctx, run->device_rows[d]);
      if (token == LLAMA_TOKEN_NULL) return ROCM_INFER_RUN_NO_TOKEN;
      chosen[run->device_rows[d]] = token;
    }
    if (run->n_host > 0) {
      for (int32_t h = 0; h < run->n_host; h++)
        for (int64_t j = 0; j < run->n_suppressed; j++) logits[run->host_rows[h] * run->n_vocab + run->suppressed[j]] = -INFINITY;
      rocm_infer_sample_rows(logits, run->n_vocab, run->n_vocab, run->n_host, run->host_rows, run->temperature, run->top_k,
                             run->top_p, run->min_p, run->uniforms + (int64_t)step * run->n_host, run->host_tokens,
                             run->scratch, run->n_threads);
      for (int32_t h = 0; h < run->n_host; h++) chosen[run->host_rows[h]] = run->host_tokens[h];
    }
    const double sampled = seconds_now();
    run->sample_seconds += sampled - decoded;
    run->steps = step + 1;
    int ended = 0;
    for (int32_t r = 0; r < n; r++) ended |= run->ends_row[r] && run->eog[chosen[r]];
    if (ended || __atomic_load_n(run->interrupt, __ATOMIC_RELAXED) || sampled - started >= run->max_seconds) break;
  }
  return 0;
}
