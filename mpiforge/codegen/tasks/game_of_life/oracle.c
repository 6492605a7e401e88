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
    int m = counts[rank], active = rows < size ? rows : size, w = cols + 2;
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = counts[r] * cols; dd[r] = displs[r] * cols; }
    double *mine = malloc((m * cols + 1) * sizeof *mine);
    MPI_Scatterv(rank == 0 ? in + 3 : NULL, cc, dd, MPI_DOUBLE, mine, m * cols, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    /* local rows 1..m, halo rows 0 and m+1, dead columns 0 and cols+1 */
    int *g = calloc((m + 2) * w, sizeof *g), *h = calloc((m + 2) * w, sizeof *h);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < cols; j++) g[(i + 1) * w + j + 1] = (int)mine[i * cols + j];
    int up = (m > 0 && rank > 0) ? rank - 1 : MPI_PROC_NULL;
    int down = (m > 0 && rank + 1 < active) ? rank + 1 : MPI_PROC_NULL;
    for (int s = 0; s < steps; s++) {
        if (rank % 2 == 0) {
            MPI_Send(&g[w], w, MPI_INT, up, 0, MPI_COMM_WORLD);
            MPI_Recv(&g[0], w, MPI_INT, up, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(&g[m * w], w, MPI_INT, down, 1, MPI_COMM_WORLD);
            MPI_Recv(&g[(m + 1) * w], w, MPI_INT, down, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(&g[(m + 1) * w], w, MPI_INT, down, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(&g[m * w], w, MPI_INT, down, 1, MPI_COMM_WORLD);
            MPI_Recv(&g[0], w, MPI_INT, up, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(&g[w], w, MPI_INT, up, 0, MPI_COMM_WORLD);
        }
        for (int i = 1; i <= m; i++)
            for (int j = 1; j <= cols; j++) {
                int nb = 0;
                for (int di = -1; di <= 1; di++)
                    for (int dj = -1; dj <= 1; dj++) nb += (di || dj) ? g[(i + di) * w + j + dj] : 0;
                h[i * w + j] = nb == 3 || (g[i * w + j] && nb == 2);
            }
        int *t = g; g = h; h = t;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < cols; j++) mine[i * cols + j] = g[(i + 1) * w + j + 1];
    double *out = rank == 0 ? malloc(rows * cols * sizeof *out) : NULL;
    MPI_Gatherv(mine, m * cols, MPI_DOUBLE, out, cc, dd, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], out, (long)rows * cols);
    MPI_Finalize();
    return 0;
}
