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
    int n = hdr[0], steps = hdr[1];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    int m = counts[rank], active = n < size ? n : size;
    double *u = calloc(m + 2, sizeof *u), *v = calloc(m + 2, sizeof *v);
    MPI_Scatterv(rank == 0 ? in + 2 : NULL, counts, displs, MPI_DOUBLE, u + 1, m, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int left = (m > 0 && rank > 0) ? rank - 1 : MPI_PROC_NULL;
    int right = (m > 0 && rank + 1 < active) ? rank + 1 : MPI_PROC_NULL;
    for (int s = 0; s < steps; s++) {
        MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 0, &u[m + 1], 1, MPI_DOUBLE, right, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[m], 1, MPI_DOUBLE, right, 1, &u[0], 1, MPI_DOUBLE, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (int i = 1; i <= m; i++) {
            int g = lo + i - 1;
            v[i] = (g == 0 || g == n - 1) ? u[i] : (u[i - 1] + u[i] + u[i + 1]) / 3.0;
        }
        double *t = u; u = v; v = t;
    }
    double *out = rank == 0 ? malloc(n * sizeof *out) : NULL;
    MPI_Gatherv(u + 1, m, MPI_DOUBLE, out, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, n);
    MPI_Finalize();
    return 0;
}
