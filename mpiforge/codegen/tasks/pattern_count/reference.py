"""Serial reference of pattern_count."""
import numpy as np


def generate(rng, n):
    m = min(2, n)
    return [n, m, rng.integers(0, 2, n), rng.integers(0, 2, m)]


def reference(f):
    n, m, text, pat = f
    return np.array([sum(bool(np.array_equal(text[i:i + m], pat)) for i in range(n - m + 1))])
