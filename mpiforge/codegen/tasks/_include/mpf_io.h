/* mpf_io.h: the I/O half of the mpiforge task contract (see mpiforge/codegen/contract.py).
 * mpf_read():  every whitespace-separated number of a file, as doubles (call on one rank),
 *              followed by at least MPF_SLACK poisoned values, so reading past the end shows.
 * mpf_write(): n doubles, one per line, with 17 significant digits (call on rank 0).
 * Both call MPI_Abort on an I/O error, so a bad file never leaves other ranks waiting. */
#ifndef MPF_IO_H
#define MPF_IO_H
#include <mpi.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>

#define MPF_SLACK 64 /* poisoned doubles after the data: a read past the end shows, not a lucky 0 */

/* The poison: NaN, or with MPF_POISON=+ / - / 0 a huge value of that sign or zero. The Tester
 * varies it over the runs, so fmin/fmax (which skip NaN), comparisons and counts all meet a
 * value that changes their result in some run. */
static double mpf_poison(void)
{
    const char *p = getenv("MPF_POISON");
    if (!p) return NAN;
    return *p == '+' ? 1e300 : *p == '-' ? -1e300 : *p == '0' ? 0.0 : NAN;
}

static double *mpf_read(const char *path, long *count)
{
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); MPI_Abort(MPI_COMM_WORLD, 2); }
    long cap = 1024, n = 0;
    double *v = malloc(cap * sizeof *v), x;
    while (fscanf(f, "%lf", &x) == 1) {
        if (n + MPF_SLACK >= cap) { cap *= 2; v = realloc(v, cap * sizeof *v); }
        v[n++] = x;
    }
    fclose(f);
    for (long i = n; i < cap; i++) v[i] = mpf_poison(); /* reads past the data poison the result */
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
