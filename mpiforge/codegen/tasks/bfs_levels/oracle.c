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
    int n = (int)in[0], m = (int)in[1];
    char *adj = calloc((long)n * n, 1);
    for (int e = 0; e < m; e++) {
        int u = (int)in[2 + 2 * e], v = (int)in[3 + 2 * e];
        if (u != v) adj[u * n + v] = adj[v * n + u] = 1;
    }
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    int *dist = malloc(n * sizeof *dist), *next = calloc(n, sizeof *next), *all = calloc(n, sizeof *all);
    for (int v = 0; v < n; v++) dist[v] = v == 0 ? 0 : -1;
    for (int level = 0;; level++) {
        int any = 0;
        for (int v = lo; v < hi; v++) {
            next[v] = 0;
            for (int u = 0; u < n && dist[v] < 0 && !next[v]; u++) next[v] = adj[v * n + u] && dist[u] == level;
        }
        MPI_Allreduce(next, all, n, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
        for (int v = 0; v < n; v++)
            if (all[v]) { dist[v] = level + 1; any = 1; }
        if (!any) break;
    }
    if (rank == 0) {
        double *out = malloc(n * sizeof *out);
        for (int v = 0; v < n; v++) out[v] = dist[v];
        mpf_write(argv[2], out, n);
    }
    MPI_Finalize();
    return 0;
}
