"""Serial reference of compact_positive."""
import numpy as np


def generate(rng, n):
    return [n, rng.integers(-9, 10, n).astype(float)]


def reference(f):
    kept = f[1][f[1] > 0]
    return np.concatenate([[len(kept)], kept])
