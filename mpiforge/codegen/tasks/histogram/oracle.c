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
    double hdr[4] = { 0, 0, 0, 0 };
    if (rank == 0) memcpy(hdr, in, sizeof hdr);
    MPI_Bcast(hdr, 4, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int n = (int)hdr[0], nbins = (int)hdr[1];
    double lo_v = hdr[2], hi_v = hdr[3];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    double *x = malloc((counts[rank] + 1) * sizeof *x);
    MPI_Scatterv(rank == 0 ? in + 4 : NULL, counts, displs, MPI_DOUBLE, x, counts[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    long *h = calloc(nbins, sizeof *h), *total = calloc(nbins, sizeof *total);
    for (int i = 0; i < counts[rank]; i++) {
        int b = (int)floor((x[i] - lo_v) / (hi_v - lo_v) * nbins);
        h[b < 0 ? 0 : b >= nbins ? nbins - 1 : b]++;
    }
    MPI_Reduce(h, total, nbins, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double *out = malloc(nbins * sizeof *out);
        for (int b = 0; b < nbins; b++) out[b] = total[b];
        mpf_write(argv[2], out, nbins);
    }
    MPI_Finalize();
    return 0;
}
