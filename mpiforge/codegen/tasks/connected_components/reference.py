"""Serial reference of connected_components."""
import numpy as np


def generate(rng, n):
    m = n // 2 + 1
    u = rng.integers(0, n, m)
    v = (u + rng.integers(1, max(n, 2), m)) % n if n > 1 else u
    return [n, m, np.stack([u, v], axis=1)]


def adjacency(f):
    n, m, e = f
    a = np.zeros((n, n), dtype=bool)
    for u, v in e:
        if u != v:
            a[u, v] = a[v, u] = True
    return a


def reference(f):
    a = adjacency(f)
    label = np.arange(f[0])
    for v in range(f[0]):
        if label[v] == v:
            stack = [v]
            while stack:
                u = stack.pop()
                for w in np.nonzero(a[u])[0]:
                    if label[w] > v:
                        label[w] = v
                        stack.append(w)
    return label
