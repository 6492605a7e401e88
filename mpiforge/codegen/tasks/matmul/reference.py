"""Serial reference of matmul (size = rows of A)."""


def generate(rng, m):
    k, n = 6, 5
    return [m, k, n, rng.standard_normal((m, k)), rng.standard_normal((k, n))]


def reference(f):
    return (f[3] @ f[4]).ravel()
