"""Serial reference of power_iteration."""
import numpy as np


def generate(rng, n):
    b = rng.random((n, n))
    return [n, 6, b + b.T]


def reference(f):
    n, iters, a = f
    x = np.ones(n) / np.sqrt(n)
    for _ in range(iters):
        y = a @ x
        x = y / np.linalg.norm(y)
    return np.concatenate([[x @ (a @ x)], x])
