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
    int n = (int)in[0];
    const double *x = in + 1;
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *re = calloc(counts[rank] + 1, sizeof *re), *im = calloc(counts[rank] + 1, sizeof *im);
    for (int k = lo; k < hi; k++)
        for (int j = 0; j < n; j++) {
            double angle = -2.0 * M_PI * (double)((long)j * k % n) / n;
            re[k - lo] += x[j] * cos(angle);
            im[k - lo] += x[j] * sin(angle);
        }
    double *out = rank == 0 ? malloc(2 * n * sizeof *out) : NULL;
    MPI_Gatherv(re, counts[rank], MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Gatherv(im, counts[rank], MPI_DOUBLE, rank == 0 ? out + n : NULL, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, 2L * n);
    MPI_Finalize();
    return 0;
}
