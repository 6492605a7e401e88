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
    for (int i = 1; i < counts[rank]; i++)  /* insertion sort of the local block */
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) { double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t; }
    double *all = rank == 0 ? malloc((n + 1) * sizeof *all) : NULL;
    MPI_Gatherv(x, counts[rank], MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {  /* merge the sorted blocks */
        double *out = malloc((n + 1) * sizeof *out);
        int *head = calloc(size, sizeof *head);
        for (int o = 0; o < n; o++) {
            int pick = -1;
            for (int r = 0; r < size; r++)
                if (head[r] < counts[r] && (pick < 0 || all[displs[r] + head[r]] < all[displs[pick] + head[pick]])) pick = r;
            out[o] = all[displs[pick] + head[pick]++];
        }
        mpf_write(argv[2], out, n);
    }
    MPI_Finalize();
    return 0;
}
