"""Serial reference of sort."""
import numpy as np


def generate(rng, n):
    return [n, rng.integers(-500, 500, n).astype(float)]


def reference(f):
    return np.sort(f[1])
