#include "mpf_io.h"
#include <math.h>
#include <string.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long cnt = 0;
    double *in = NULL;
    if (rank == 0) in = mpf_read(argv[1], &cnt);
    int hdr[2] = { 0, 0 };
    if (rank == 0) { hdr[0] = (int)in[0]; hdr[1] = (int)in[1]; }
    MPI_Bcast(hdr, 2, MPI_INT, 0, MPI_COMM_WORLD);
    int n = hdr[0], k = hdr[1];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *x = malloc((counts[rank] + 1) * sizeof *x);
    MPI_Scatterv(rank == 0 ? in + 2 : NULL, counts, displs, MPI_DOUBLE, x, counts[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int *c = calloc(k, sizeof *c), *all = calloc(k, sizeof *all);
    for (int i = 0; i < counts[rank]; i++) c[(int)x[i]]++;
    MPI_Allreduce(c, all, k, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int best = 0;
    for (int v = 1; v < k; v++)
        if (all[v] > all[best]) best = v;
    if (rank == 0) {
        double out[2] = { best, all[best] };
        mpf_write(argv[2], out, 2);
    }
    MPI_Finalize();
    return 0;
}
