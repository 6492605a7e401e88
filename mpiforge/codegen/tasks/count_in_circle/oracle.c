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
    double hdr[2] = { 0, 0 };
    if (rank == 0) memcpy(hdr, in, sizeof hdr);
    MPI_Bcast(hdr, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int n = (int)hdr[0];
    double radius = hdr[1];
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    int *cc = malloc(size * sizeof(int)), *dd = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) { cc[r] = 2 * counts[r]; dd[r] = 2 * displs[r]; }
    double *p = malloc((cc[rank] + 1) * sizeof *p);
    MPI_Scatterv(rank == 0 ? in + 2 : NULL, cc, dd, MPI_DOUBLE, p, cc[rank], MPI_DOUBLE, 0, MPI_COMM_WORLD);
    long local = 0, total = 0;
    for (int i = 0; i < counts[rank]; i++) local += p[2 * i] * p[2 * i] + p[2 * i + 1] * p[2 * i + 1] <= radius * radius;
    MPI_Reduce(&local, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double out = total;
        mpf_write(argv[2], &out, 1);
    }
    MPI_Finalize();
    return 0;
}
