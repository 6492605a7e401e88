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
    int m = hdr[0], n = hdr[1];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = m / size + (r < m % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = counts[r] * n; dd[r] = displs[r] * n; }
    double *a = malloc((cc[rank] + 1) * sizeof *a), *x = malloc(n * sizeof *x);
    MPI_Scatterv(rank == 0 ? in + 2 : NULL, cc, dd, MPI_DOUBLE, a, cc[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) memcpy(x, in + 2 + (long)m * n, n * sizeof *x);
    MPI_Bcast(x, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double *y = calloc(counts[rank] + 1, sizeof *y);
    for (int i = 0; i < counts[rank]; i++)
        for (int j = 0; j < n; j++) y[i] += a[i * n + j] * x[j];
    double *out = rank == 0 ? malloc(m * sizeof *out) : NULL;
    MPI_Gatherv(y, counts[rank], MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, m);
    MPI_Finalize();
    return 0;
}
