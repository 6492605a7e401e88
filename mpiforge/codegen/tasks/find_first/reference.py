"""Serial reference of find_first."""
import numpy as np


def generate(rng, n):
    return [n, int(rng.integers(0, 12)), rng.integers(0, max(12, n // 4), n)]


def reference(f):
    hits = np.nonzero(f[2] == f[1])[0]
    return np.array([hits[0] if len(hits) else -1])
