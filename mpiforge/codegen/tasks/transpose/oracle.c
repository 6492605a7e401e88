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
    int m = (int)in[0], n = (int)in[1];
    const double *A = in + 2;
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *t = malloc(((long)counts[rank] * m + 1) * sizeof *t);
    for (int j = lo; j < hi; j++)
        for (int i = 0; i < m; i++) t[(j - lo) * m + i] = A[i * n + j];
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = counts[r] * m; dd[r] = displs[r] * m; }
    double *out = rank == 0 ? malloc((long)m * n * sizeof *out) : NULL;
    MPI_Gatherv(t, cc[rank], MPI_DOUBLE, out, cc, dd, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, (long)m * n);
    MPI_Finalize();
    return 0;
}
