"""Serial reference of bfs_levels."""
import numpy as np


def generate(rng, n):
    m = n + n // 3
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
    dist = np.full(f[0], -1)
    dist[0] = 0
    frontier = [0]
    while frontier:
        nxt = [v for v in range(f[0]) if dist[v] < 0 and a[v, frontier].any()]
        for v in nxt:
            dist[v] = dist[frontier[0]] + 1
        frontier = nxt
    return dist
