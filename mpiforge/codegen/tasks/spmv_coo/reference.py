"""Serial reference of spmv_coo."""
import numpy as np


def generate(rng, n):
    nnz = 3 * n + 1
    return [n, nnz, rng.integers(0, n, nnz), rng.integers(0, n, nnz), rng.standard_normal(nnz), rng.standard_normal(n)]


def reference(f):
    n, nnz, row, col, val, x = f
    y = np.zeros(n)
    np.add.at(y, row, val * x[col])
    return y
