"""Serial reference of max_loc."""
import numpy as np


def generate(rng, n):
    return [n, rng.integers(-50, 50, n).astype(float)]


def reference(f):
    x = f[1]
    return np.array([x.max(), int(np.argmax(x))])
