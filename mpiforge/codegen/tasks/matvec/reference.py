"""Serial reference of matvec (size = number of rows)."""


def generate(rng, m):
    n = 13
    return [m, n, rng.standard_normal((m, n)), rng.standard_normal(n)]


def reference(f):
    return f[2] @ f[3]
