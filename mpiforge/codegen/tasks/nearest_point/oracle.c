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
    double qx = in[1], qy = in[2];
    const double *p = in + 3;
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++) {
        counts[r] = n / size + (r < n % size ? 1 : 0);
        displs[r] = r == 0 ? 0 : displs[r - 1] + counts[r - 1];
    }
    int lo = displs[rank], hi = lo + counts[rank];
    struct { double d; int i; } local = { INFINITY, n }, best;
    for (int i = lo; i < hi; i++) {
        double d = (p[2 * i] - qx) * (p[2 * i] - qx) + (p[2 * i + 1] - qy) * (p[2 * i + 1] - qy);
        if (d < local.d) { local.d = d; local.i = i; }
    }
    MPI_Reduce(&local, &best, 1, MPI_DOUBLE_INT, MPI_MINLOC, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double out[2] = { best.i, best.d };
        mpf_write(argv[2], out, 2);
    }
    MPI_Finalize();
    return 0;
}
