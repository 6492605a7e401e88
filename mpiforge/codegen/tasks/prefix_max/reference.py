"""Serial reference of prefix_max."""
import numpy as np


def generate(rng, n):
    return [n, rng.integers(-1000, 1000, n).astype(float)]


def reference(f):
    return np.maximum.accumulate(f[1])
