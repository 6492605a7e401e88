"""Serial reference of triangle_count."""
import numpy as np


def generate(rng, n):
    m = 3 * n
    u = rng.integers(0, n, m)
    v = (u + rng.integers(1, max(n, 2), m)) % n if n > 1 else u
    edges = np.stack([u, v], axis=1)
    if n >= 3 and rng.random() < 0.7:  # a triangle among the last vertices, which an uneven split may drop
        last = np.array([[n - 3, n - 2], [n - 2, n - 1], [n - 3, n - 1]])
        edges = np.concatenate([edges, last])
    return [n, len(edges), edges]


def adjacency(f):
    n, m, e = f
    a = np.zeros((n, n), dtype=bool)
    for u, v in e:
        if u != v:
            a[u, v] = a[v, u] = True
    return a


def reference(f):
    a = adjacency(f).astype(np.int64)
    return np.array([np.trace(a @ a @ a) // 6])
