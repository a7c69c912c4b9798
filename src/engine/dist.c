/* dist.c: data parallelism over MPI.  Built with Open MPI when the build
 * finds it (LF_HAVE_MPI); otherwise every call is the single-process case. */
#include "dist.h"
#include "loraflow.h"
#include "../core/util.h"

#include <stdlib.h>

#ifdef LF_HAVE_MPI
#include <mpi.h>

static int dist_on = 0, dist_rank = 0, dist_size = 1;

/* Initialise MPI only when started by mpirun (so that a plain run never
 * needs an MPI runtime to be present and working). */
int lf_dist_init(int *argc, char ***argv) {
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return 0;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS) {
        lf_set_error("MPI_Init failed");
        return -1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_size);
    dist_on = 1;
    return 0;
}

int lf_dist_rank(void) { return dist_rank; }
int lf_dist_size(void) { return dist_size; }

void lf_dist_finalize(void) {
    if (dist_on) MPI_Finalize();
    dist_on = 0;
}

/* MPI counts are int: reduce in chunks. */
#define CHUNK (1 << 28)

int lf_dist_allreduce_f32(float *x, size_t n) {
    if (!dist_on || dist_size == 1) return 0;
    for (size_t o = 0; o < n; o += CHUNK) {
        int m = (int)(n - o < CHUNK ? n - o : CHUNK);
        if (MPI_Allreduce(MPI_IN_PLACE, x + o, m, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) {
            lf_set_error("MPI_Allreduce failed");
            return -1;
        }
    }
    return 0;
}

int lf_dist_allreduce_f64(double *x, size_t n) {
    if (!dist_on || dist_size == 1) return 0;
    if (MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) {
        lf_set_error("MPI_Allreduce failed");
        return -1;
    }
    return 0;
}

#else

int lf_dist_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
        lf_set_error("started by mpirun, but this loraflow was built without Open MPI "
                     "(install libopenmpi-dev and rebuild)");
        return -1;
    }
    return 0;
}
int lf_dist_rank(void) { return 0; }
int lf_dist_size(void) { return 1; }
void lf_dist_finalize(void) {}
int lf_dist_allreduce_f32(float *x, size_t n) { (void)x; (void)n; return 0; }
int lf_dist_allreduce_f64(double *x, size_t n) { (void)x; (void)n; return 0; }

#endif
