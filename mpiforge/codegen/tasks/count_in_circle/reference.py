"""Serial reference of count_in_circle."""
import numpy as np


def generate(rng, n):
    return [n, 5.0, rng.integers(-7, 8, (n, 2)).astype(float)]


def reference(f):
    p = f[2]
    return np.array([np.count_nonzero(p[:, 0] ** 2 + p[:, 1] ** 2 <= f[1] ** 2)])
