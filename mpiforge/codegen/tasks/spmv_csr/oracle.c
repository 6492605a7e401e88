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
    MPI_Bcast(&cnt, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    if (rank != 0) in = malloc(cnt * sizeof *in);
    MPI_Bcast(in, (int)cnt, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int n = (int)in[0], nnz = (int)in[1];
    const double *rowptr = in + 2, *col = rowptr + n + 1, *val = col + nnz, *x = val + nnz;
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *y = calloc(counts[rank] + 1, sizeof *y);
    for (int i = lo; i < hi; i++)
        for (int p = (int)rowptr[i]; p < (int)rowptr[i + 1]; p++) y[i - lo] += val[p] * x[(int)col[p]];
    double *out = rank == 0 ? malloc(n * sizeof *out) : NULL;
    MPI_Gatherv(y, counts[rank], MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, n);
    MPI_Finalize();
    return 0;
}
