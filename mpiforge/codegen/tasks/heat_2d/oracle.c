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
    int hdr[3] = { 0, 0, 0 };
    if (rank == 0) for (int i = 0; i < 3; i++) hdr[i] = (int)in[i];
    MPI_Bcast(hdr, 3, MPI_INT, 0, MPI_COMM_WORLD);
    int rows = hdr[0], cols = hdr[1], steps = hdr[2];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = rows / size + (r < rows % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    int m = counts[rank], active = rows < size ? rows : size;
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = counts[r] * cols; dd[r] = displs[r] * cols; }
    double *u = calloc((m + 2) * cols, sizeof *u), *v = calloc((m + 2) * cols, sizeof *v);
    MPI_Scatterv(rank == 0 ? in + 3 : NULL, cc, dd, MPI_DOUBLE, u + cols, m * cols, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int up = (m > 0 && rank > 0) ? rank - 1 : MPI_PROC_NULL;
    int down = (m > 0 && rank + 1 < active) ? rank + 1 : MPI_PROC_NULL;
    for (int s = 0; s < steps; s++) {
        MPI_Sendrecv(&u[cols], cols, MPI_DOUBLE, up, 0, &u[(m + 1) * cols], cols, MPI_DOUBLE, down, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[m * cols], cols, MPI_DOUBLE, down, 1, &u[0], cols, MPI_DOUBLE, up, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (int i = 1; i <= m; i++) {
            int g = lo + i - 1;
            for (int j = 0; j < cols; j++) {
                double *c = &u[i * cols + j];
                int border = g == 0 || g == rows - 1 || j == 0 || j == cols - 1;
                v[i * cols + j] = border ? *c : 0.2 * (*c + c[-cols] + c[cols] + c[-1] + c[1]);
            }
        }
        double *t = u; u = v; v = t;
    }
    double *out = rank == 0 ? malloc(rows * cols * sizeof *out) : NULL;
    MPI_Gatherv(u + cols, m * cols, MPI_DOUBLE, out, cc, dd, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, (long)rows * cols);
    MPI_Finalize();
    return 0;
}
