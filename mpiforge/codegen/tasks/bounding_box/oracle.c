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
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = 2 * counts[r]; dd[r] = 2 * displs[r]; }
    double *p = malloc((cc[rank] + 1) * sizeof *p);
    MPI_Scatterv(rank == 0 ? in + 1 : NULL, cc, dd, MPI_DOUBLE, p, cc[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double lo2[2] = { INFINITY, INFINITY }, hi2[2] = { -INFINITY, -INFINITY }, box[4];
    for (int i = 0; i < counts[rank]; i++)
        for (int d = 0; d < 2; d++) { lo2[d] = fmin(lo2[d], p[2 * i + d]); hi2[d] = fmax(hi2[d], p[2 * i + d]); }
    MPI_Reduce(lo2, box, 2, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
    MPI_Reduce(hi2, box + 2, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], box, 4);
    MPI_Finalize();
    return 0;
}
