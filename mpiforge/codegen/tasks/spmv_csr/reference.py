"""Serial reference of spmv_csr."""
import numpy as np


def generate(rng, n):
    dense = np.where(rng.random((n, n)) < 0.2, rng.standard_normal((n, n)), 0.0)
    rows, cols = np.nonzero(dense)
    rowptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return [n, len(cols), rowptr, cols, dense[rows, cols], rng.standard_normal(n)]


def reference(f):
    n, nnz, rowptr, col, val, x = f
    y = np.zeros(n)
    for i in range(n):
        for p in range(rowptr[i], rowptr[i + 1]):
            y[i] += val[p] * x[col[p]]
    return y
