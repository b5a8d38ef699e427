/* The host sampler's entry point (host_sampler.c), shared with the decode runs. */
#ifndef ROCM_INFER_HOST_SAMPLER_H
#define ROCM_INFER_HOST_SAMPLER_H

#include <stdint.h>

void rocm_infer_sample_rows(const float *rows, int64_t row_stride, int64_t n_vocab, int64_t n_rows, const int64_t *row_index,
                            const float *temperature, const int32_t *top_k, const float *top_p, const float *min_p,
                            const double *u, int32_t *tokens, float *scratch, int32_t n_threads);

#endif
