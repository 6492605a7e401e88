"""Serial reference of closest_pair."""
import numpy as np


def generate(rng, n):
    """Random points; in most tests the closest pair is planted where bugs hide: at the very end,
    or straddling the end of rank 0's block for 2, 3 or 4 ranks (blocks of n // P, the first n % P
    one longer)."""
    p = rng.uniform(-10, 10, (n, 2))
    where = rng.integers(0, 5)  # 0: nowhere, 1: the end, 2-4: rank 0's block end for P = where
    if n > 2 and where:
        k = n - 2 if where == 1 else min(n // where + (n % where > 0) - 1, n - 2)
        p[k + 1] = p[k] + 1e-3
    return [n, p]


def reference(f):
    p = f[1]
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    d[np.arange(len(p)), np.arange(len(p))] = np.inf
    return np.array([d.min()])
