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
    double *x = malloc((counts[rank] + 1) * sizeof *x);
    MPI_Scatterv(rank == 0 ? in + 1 : NULL, counts, displs, MPI_DOUBLE, x, counts[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double s = 0, sum = 0, q = 0, sq = 0;
    for (int i = 0; i < counts[rank]; i++) s += x[i];
    MPI_Allreduce(&s, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double mean = sum / n;
    for (int i = 0; i < counts[rank]; i++) q += (x[i] - mean) * (x[i] - mean);
    MPI_Allreduce(&q, &sq, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double sd = sqrt(sq / n);
    for (int i = 0; i < counts[rank]; i++) x[i] = (x[i] - mean) / sd;
    double *out = rank == 0 ? malloc(n * sizeof *out) : NULL;
    MPI_Gatherv(x, counts[rank], MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, n);
    MPI_Finalize();
    return 0;
}
