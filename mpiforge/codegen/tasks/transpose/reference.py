"""Serial reference of transpose (size = columns of A)."""


def generate(rng, n):
    m = 7
    return [m, n, rng.integers(-99, 99, (m, n)).astype(float)]


def reference(f):
    return f[2].T.ravel()
