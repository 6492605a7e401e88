"""Serial reference of kth_smallest."""
import numpy as np


def generate(rng, n):
    return [n, int(rng.integers(1, n + 1)), rng.integers(-40, 40, n).astype(float)]


def reference(f):
    return np.array([np.sort(f[2])[f[1] - 1]])
