/* mpf_io.h: the I/O half of the mpiforge task contract (see mpiforge/codegen/contract.py).
 * mpf_read():  every whitespace-separated number of a file, as doubles (call on one rank).
 * mpf_write(): n doubles, one per line, with 17 significant digits (call on rank 0).
 * Both call MPI_Abort on an I/O error, so a bad file never leaves other ranks waiting. */
#ifndef MPF_IO_H
#define MPF_IO_H
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static double *mpf_read(const char *path, long *count)
{
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); MPI_Abort(MPI_COMM_WORLD, 2); }
    long cap = 1024, n = 0;
    double *v = malloc(cap * sizeof *v), x;
    while (fscanf(f, "%lf", &x) == 1) {
        if (n == cap) { cap *= 2; v = realloc(v, cap * sizeof *v); }
        v[n++] = x;
    }
    fclose(f);
    *count = n;
    return v;
}

static void mpf_write(const char *path, const double *v, long n)
{
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); MPI_Abort(MPI_COMM_WORLD, 2); }
    for (long i = 0; i < n; i++) fprintf(f, "%.17g\n", v[i]);
    fclose(f);
}
#endif
