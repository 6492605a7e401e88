"""Serial reference of nearest_point."""
import numpy as np


def generate(rng, n):
    return [n, float(rng.integers(-10, 10)), float(rng.integers(-10, 10)), rng.integers(-20, 20, (n, 2)).astype(float)]


def reference(f):
    n, qx, qy, p = f
    d = (p[:, 0] - qx) ** 2 + (p[:, 1] - qy) ** 2
    return np.array([int(np.argmin(d)), d.min()])
