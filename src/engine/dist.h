/* dist.h: collective operations for data parallelism (internal). */
#ifndef LF_DIST_H
#define LF_DIST_H

#include <stddef.h>

/* Sum x[0..n) over all ranks, in place (no-op for one process). */
int lf_dist_allreduce_f32(float *x, size_t n);
int lf_dist_allreduce_f64(double *x, size_t n);

#endif
