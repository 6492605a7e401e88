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
    int n = 0;
    if (rank == 0) n = (int)in[0];
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    /* y is split like x; blocks of x travel around a ring so that every rank sees all of x */
    int cap = n / size + 1;
    double *h = malloc(n * sizeof *h), *blk = calloc(cap + 1, sizeof *blk), *tmp = calloc(cap + 1, sizeof *tmp);
    double *y = calloc(counts[rank] + 1, sizeof *y);
    if (rank == 0) memcpy(h, in + 1 + n, n * sizeof *h);
    MPI_Bcast(h, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Scatterv(rank == 0 ? in + 1 : NULL, counts, displs, MPI_DOUBLE, blk, counts[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int right = (rank + 1) % size, left = (rank - 1 + size) % size;
    for (int s = 0; s < size; s++) {
        int owner = (rank - s + size) % size;
        for (int i = lo; i < hi; i++)
            for (int j = 0; j < counts[owner]; j++)
                y[i - lo] += blk[j] * h[((i - displs[owner] - j) % n + n) % n];
        MPI_Sendrecv(blk, cap, MPI_DOUBLE, right, 0, tmp, cap, MPI_DOUBLE, left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        double *t = blk; blk = tmp; tmp = t;
    }
    double *out = rank == 0 ? malloc(n * sizeof *out) : NULL;
    MPI_Gatherv(y, counts[rank], MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, n);
    MPI_Finalize();
    return 0;
}
