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
    int n = (int)in[0], iters = (int)in[1];
    const double *A = in + 2;
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *x = malloc((n + 1) * sizeof *x), *y = malloc((counts[rank] + 1) * sizeof *y);
    for (int i = 0; i < n; i++) x[i] = 1.0 / sqrt((double)n);
    for (int it = 0; it < iters; it++) {
        double part = 0, norm2 = 0;
        for (int i = lo; i < hi; i++) {
            y[i - lo] = 0;
            for (int j = 0; j < n; j++) y[i - lo] += A[i * n + j] * x[j];
            part += y[i - lo] * y[i - lo];
        }
        MPI_Allreduce(&part, &norm2, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (int i = 0; i < counts[rank]; i++) y[i] /= sqrt(norm2);
        MPI_Allgatherv(y, counts[rank], MPI_DOUBLE, x, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD);
    }
    double part = 0, lambda = 0;
    for (int i = lo; i < hi; i++) {
        double ax = 0;
        for (int j = 0; j < n; j++) ax += A[i * n + j] * x[j];
        part += x[i] * ax;
    }
    MPI_Reduce(&part, &lambda, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double *out = malloc((n + 1) * sizeof *out);
        out[0] = lambda;
        memcpy(out + 1, x, n * sizeof *x);
        mpf_write(argv[2], out, n + 1);
    }
    MPI_Finalize();
    return 0;
}
