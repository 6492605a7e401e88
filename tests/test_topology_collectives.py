"""``TopologyCollective`` against MPI's own collectives, and the cost model that plans it.

Every algorithm of every collective (forced with ``algo=``, and the cost model's own choice)
is compared with Allreduce / Reduce_scatter_block / Allgather / Bcast / Reduce for ops
sum/max/min/prod (and avg), dtypes float32/float64/int32/int64, 1, 7 and 1001 elements, on 1-4
ranks in block, round-robin and irregular node layouts (``MPIFORGE_TOPOLOGY``). Integers must
match exactly, floats to rtol 1e-5; allreduce results must be the same bits on every rank, and
no input may change. Quantized allreduce (int8, fp8) must stay within the bound derived below,
pipelined segments must not change an exact sum, and device arrays must come back as device
arrays.

One mpiexec launch per rank count runs the sections (``SECTIONS``) of all its layouts (a
layout is set by MPIFORGE_TOPOLOGY before the section builds its collectives). A section
records failed checks instead of raising (so the ranks stay in step and one failure does not
hide the others) and every rank writes its record after each section; the tests read the
records of the launch they share, one test per (section, layout).

Quantization bound. In the hierarchical allreduce only the step across the K nodes is
quantized: a ring in which every hop encodes the partial sum it forwards (K - 1 encodings)
and each chunk's owner encodes the finished sum once more (K in all). One encoding of a value
x in a codec block with largest magnitude m (scale s = m / qmax) errs by at most s / 2 for int8
(qmax 127) and by at most max(|x| / 16, s / 1024) for fp8 e4m3 (qmax 448: 3 mantissa bits, half
the smallest subnormal step below 2^-6), plus float32 rounding. A partial sum at element i is a
sum over a subset of the ranks, so |partial_i| <= T_i + E_i where T_i = sum_r |x_r,i| and E is
the error collected so far; a codec block is at most 256 contiguous elements of the flattened
array, so m <= the largest T + E within 255 elements of i. Iterating K times gives E_K, the
allowed |result - exact sum| per element (``quantization_bound``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import traceback
import zlib
from functools import partial
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.testing import MPIRunError, run_ranks

TIMEOUT = 180
DTYPES = ("float32", "float64", "int32", "int64")
SIZES = (1, 7, 1001)
OPS = ("sum", "max", "min", "prod")
MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD, "avg": MPI.SUM}
COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "bcast", "reduce")
CODECS = ("int8", "fp8")
RTOL = 1e-5
MAX_REPORTED = 25  # failures listed per section and rank

# Every launch: no stored profile, nothing forced from the developer's shell, numba's CUDA simulator.
ENV = {"MPIFORGE_TOPO_PROFILE": "/nonexistent/mpiforge-test-profile.json", "MPIFORGE_ALGO": "",
       "MPIFORGE_QUANTIZE": "", "NUMBA_ENABLE_CUDASIM": "1"}


# -- data and expectations ------------------------------------------------------------------------

def values(rank: int, n: int, dtype: str, salt: int = 0) -> np.ndarray:
    """Rank ``rank``'s operand: floats in [0.5, 1.5) (no cancellation), integers in [-3, 3]."""
    rng = np.random.default_rng([rank, n, salt, zlib.crc32(dtype.encode())])
    if dtype.startswith("float"):
        return rng.uniform(0.5, 1.5, n).astype(dtype)
    return rng.integers(-3, 4, n).astype(dtype)


def signed_values(rank: int, n: int, salt: int = 0) -> np.ndarray:
    """float32 of both signs, magnitudes changing by decades every 100 elements, a zero stretch."""
    rng = np.random.default_rng([rank, n, salt, 99])
    decades = np.repeat(rng.integers(-3, 4, n // 100 + 1), 100)[:n]
    x = rng.standard_normal(n) * 10.0 ** decades
    x[300:600] = 0.0
    return x.astype(np.float32)


def integer_floats(rank: int, n: int) -> np.ndarray:
    """float32 holding small integers: every sum is exact, whatever the order."""
    return ((np.arange(n) * 7 + rank * 13) % 23 - 11).astype(np.float32)


def supported(collective: str, algorithm: str, nprocs: int, node_sizes: list[int]) -> bool:
    """The documented constraints: hierarchical needs several nodes (and, except for allreduce,
    nodes of equal size); recursive halving / recursive doubling allgather need 2^k ranks."""
    if algorithm == "hierarchical":
        return len(node_sizes) > 1 and (collective == "allreduce" or len(set(node_sizes)) == 1)
    if (collective, algorithm) in (("reduce_scatter", "recursive_halving"), ("allgather", "recursive_doubling")):
        return nprocs & (nprocs - 1) == 0
    return True


def window_max(t: np.ndarray, block: int = 256) -> np.ndarray:
    """For every i, at least max(t[j]) over |j - i| < block (the max over i's aligned block of
    ``block`` elements and its two neighbours)."""
    nb = -(-t.size // block)
    padded = np.zeros(nb * block)
    padded[:t.size] = t
    maxima = np.concatenate([[0.0], padded.reshape(nb, block).max(axis=1), [0.0]])
    near = np.maximum(np.maximum(maxima[:-2], maxima[1:-1]), maxima[2:])
    return np.repeat(near, block)[:t.size]


def quantization_bound(codec: str, operands: np.ndarray, nodes: int) -> np.ndarray:
    """Largest |quantized sum - exact sum| per element for ``operands`` (ranks x n) summed by a
    ring over ``nodes`` nodes that encodes ``nodes`` times (see the module docstring)."""
    total = np.abs(operands.astype(np.float64)).sum(axis=0)
    err = np.zeros_like(total)
    for _ in range(nodes if nodes > 1 else 0):
        magnitude = total + err
        absmax = window_max(magnitude)
        if codec == "int8":
            step = absmax / 127 / 2
        else:
            step = np.maximum(magnitude / 16, absmax / 448 / 1024)
        err = err + step + (magnitude + absmax) * 2.0 ** -22 + 2.0 ** -148
    eps = np.finfo(np.float32).eps
    return err + 4 * len(operands) * eps * (total + err)


def digest(array) -> str:
    a = np.asarray(array)
    return hashlib.sha1(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


# -- soft checks ----------------------------------------------------------------------------------

class Checks:
    """Failed checks of one section on one rank; never raises, so every rank keeps in step."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self.failures: list[str] = []
        self.digests: list[tuple[str, str]] = []
        self.count = 0

    def check(self, ok, what: str) -> bool:
        self.count += 1
        if not ok:
            self.failures.append(what)
        return bool(ok)

    def equal(self, got, want, what: str) -> bool:
        if got is FAILED:  # already recorded
            return False
        got_a, want_a = np.asarray(got), np.asarray(want)
        ok = got is not None and got_a.dtype == want_a.dtype and got_a.shape == want_a.shape \
            and np.array_equal(got_a, want_a)
        return self.check(ok, f"{what}: got {_show(got)}, want {_show(want)}")

    def close(self, got, want, what: str, rtol: float = RTOL) -> bool:
        """Exact for integers, rtol for floats; dtype and shape must match."""
        if got is FAILED:
            return False
        want_a = np.asarray(want)
        if not np.issubdtype(want_a.dtype, np.floating):
            return self.equal(got, want, what)
        got_a = np.asarray(got)
        ok = got is not None and got_a.dtype == want_a.dtype and got_a.shape == want_a.shape \
            and np.allclose(got_a, want_a, rtol=rtol, atol=0)
        return self.check(ok, f"{what}: got {_show(got)}, want {_show(want)}")

    def raises(self, exc: type, call, what: str) -> None:
        try:
            call()
        except exc:
            self.count += 1
            return
        except Exception as other:  # noqa: BLE001 - recorded, not raised
            self.check(False, f"{what}: expected {exc.__name__}, got {type(other).__name__}: {other}")
            return
        self.check(False, f"{what}: expected {exc.__name__}, nothing was raised")

    def unchanged(self, array, pristine, what: str) -> None:
        self.check(np.asarray(array).tobytes() == np.asarray(pristine).tobytes(), f"{what}: the input was modified")

    def same_everywhere(self, result, what: str) -> None:
        """Recorded here, compared across ranks (one allgather) by ``settle``."""
        self.digests.append((what, "FAILED" if result is FAILED else digest(result)))

    def settle(self) -> None:
        everyone = self.comm.allgather(self.digests)
        for i, (what, mine) in enumerate(self.digests):
            theirs = [d[i] if i < len(d) else None for d in everyone]
            if any(t is None or t[0] != what for t in theirs):
                self.check(False, f"{what}: ranks ran different checks")
                break
            if "FAILED" not in (t[1] for t in theirs):
                self.check(all(t[1] == mine for t in theirs), f"{what}: ranks hold different bits")
        self.digests = []


def _show(a) -> str:
    if a is None:
        return "None"
    a = np.asarray(a)
    return f"{a.dtype}{list(a.shape)} {np.array2string(a.reshape(-1)[:6], precision=8)}"


class _Failed:
    def __repr__(self) -> str:
        return "FAILED"


FAILED = _Failed()  # what ``_attempt`` returns for a call that raised


def _attempt(checks: Checks, what: str, call):
    """``call()``, or FAILED with the exception recorded (for calls expected to work)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        checks.check(False, f"{what}: raised {type(exc).__name__}: {exc}")
        return FAILED


def _prefers_quantized(coll, nbytes: int) -> bool:
    """Whether ``coll``'s cost model predicts the quantized hierarchical allreduce of ``nbytes``
    faster than the unquantized one (then the codec must really be used: "only where it pays")."""
    machine = coll.machine
    return machine.best("allreduce", nbytes, True, ["hierarchical"]).seconds \
        < machine.best("allreduce", nbytes, False, ["hierarchical"]).seconds


def _node_sizes(coll) -> list[int]:
    return [len(n) for n in coll.topology.nodes]


def _collectives(comm: MPI.Comm) -> dict:
    """{(collective, algorithm): TopologyCollective forcing it}, plus (collective, "auto")."""
    from mpiforge.topology.collective import TopologyCollective
    from mpiforge.topology.cost import ALGORITHMS

    out = {}
    auto = TopologyCollective(comm)
    for collective in COLLECTIVES:
        out[collective, "auto"] = auto
        for name in ALGORITHMS[collective]:
            out[collective, name] = TopologyCollective(comm, algo=f"{collective}={name}")
    return out


def _free(colls: dict) -> None:
    for coll in {id(c): c for c in colls.values()}.values():
        coll.free()


# -- section: every algorithm of every collective against MPI -------------------------------------

def section_matrix(comm: MPI.Comm, checks: Checks) -> None:
    p, rank = comm.size, comm.rank
    colls = _collectives(comm)
    sizes = _node_sizes(colls["allreduce", "auto"])
    runnable = {}
    for (collective, name), coll in colls.items():
        if name == "auto" or supported(collective, name, p, sizes):
            runnable[collective, name] = coll
            if name != "auto":
                checks.equal(coll.plan(collective, 8).algorithm, name, f"{collective}={name} is the plan")
        else:
            arg = np.arange(p, dtype=np.float64)
            call = {"allreduce": partial(coll.allreduce, arg), "reduce_scatter": partial(coll.reduce_scatter, arg),
                    "allgather": partial(coll.allgather, arg), "bcast": partial(coll.broadcast, arg),
                    "reduce": partial(coll.reduce, arg)}[collective]
            checks.raises(ValueError, call, f"{collective}={name} on {p} ranks, nodes {sizes}")

    def algorithms(collective):
        return [(name, coll) for (c, name), coll in runnable.items() if c == collective]

    for d, dtype in enumerate(DTYPES):
        floating = dtype.startswith("float")
        ops = OPS + (("avg",) if floating else ())
        for n in SIZES:
            mine = values(rank, n, dtype)
            pristine = mine.copy()
            where = f"{dtype} n={n}"
            # allreduce
            for op in ops:
                want = np.empty_like(mine)
                comm.Allreduce(mine, want, op=MPI_OPS[op])
                if op == "avg":
                    want = want / np.asarray(p, dtype)
                for name, coll in algorithms("allreduce"):
                    what = f"allreduce={name} {op} {where}"
                    got = _attempt(checks, what, partial(coll.allreduce, mine, op))
                    checks.close(got, want, what)
                    checks.same_everywhere(got, what)
                    checks.unchanged(mine, pristine, what)
            # reduce_scatter: n=1 as shape (p,) (0-d blocks), n=7 as (p, 7), n=1001 flattened from (7, 143 p)
            shape = {1: (p,), 7: (p, 7), 1001: (7, 143 * p)}[n]
            block = {1: (), 7: (7,), 1001: (1001,)}[n]
            full = values(rank, p * n, dtype, salt=1).reshape(shape)
            full_pristine = full.copy()
            for op in ops:
                want = np.empty(n, dtype)
                comm.Reduce_scatter_block(full.reshape(-1), want, op=MPI_OPS[op])
                if op == "avg":
                    want = want / np.asarray(p, dtype)
                want = want.reshape(block)
                for name, coll in algorithms("reduce_scatter"):
                    what = f"reduce_scatter={name} {op} {dtype} shape {shape}"
                    got = _attempt(checks, what, partial(coll.reduce_scatter, full, op))
                    checks.close(got, want, what)
                    checks.unchanged(full, full_pristine, what)
            # allgather: MPI's stacked result, bit for bit
            want = np.empty((p, n), dtype)
            comm.Allgather(mine, want)
            for name, coll in algorithms("allgather"):
                what = f"allgather={name} {where}"
                checks.equal(_attempt(checks, what, partial(coll.allgather, mine)), want, what)
                checks.unchanged(mine, pristine, what)
            # bcast, in place, from a root that changes with the case
            root = (n + d) % p
            for name, coll in algorithms("bcast"):
                what = f"bcast={name} root={root} {where}"
                buf = values(root, n, dtype) if rank == root else np.zeros(n, dtype)
                got = _attempt(checks, what, partial(coll.broadcast, buf, root))
                checks.check(got is buf, f"{what}: did not return the array it filled")
                checks.equal(buf, values(root, n, dtype), what)
            # reduce, on a root that changes with the case (None elsewhere)
            root = (n + d + 1) % p
            for op in ops:
                want = np.empty_like(mine) if rank == root else None
                comm.Reduce(mine, want, op=MPI_OPS[op], root=root)
                if op == "avg" and rank == root:
                    want = want / np.asarray(p, dtype)
                for name, coll in algorithms("reduce"):
                    what = f"reduce={name} {op} root={root} {where}"
                    got = _attempt(checks, what, partial(coll.reduce, mine, op, root))
                    if rank == root:
                        checks.close(got, want, what)
                    else:
                        checks.check(got is None, f"{what}: rank {rank} (not the root) got {_show(got)}, want None")
                    checks.unchanged(mine, pristine, what)

    # shapes beyond 1-D, and every root of bcast/reduce once
    x = values(rank, 21, "float64", salt=2).reshape(3, 7)
    for name, coll in algorithms("allreduce"):
        want = np.empty_like(x)
        comm.Allreduce(x, want)
        checks.close(_attempt(checks, name, partial(coll.allreduce, x)), want, f"allreduce={name} of shape (3, 7)")
    for name, coll in algorithms("allgather"):
        want = np.empty((p, 3, 7))
        comm.Allgather(x, want)
        checks.equal(_attempt(checks, name, partial(coll.allgather, x)), want, f"allgather={name} of shape (3, 7)")
    for root in range(p):
        for name, coll in algorithms("bcast"):
            buf = x.copy() if rank == root else np.zeros_like(x)
            _attempt(checks, name, partial(coll.broadcast, buf, root))
            checks.equal(buf, values(root, 21, "float64", salt=2).reshape(3, 7), f"bcast={name} root={root} (3, 7)")
        for name, coll in algorithms("reduce"):
            ints = values(rank, 5, "int64", salt=3)
            want = np.empty_like(ints) if rank == root else None
            comm.Reduce(ints, want, op=MPI.SUM, root=root)
            got = _attempt(checks, name, partial(coll.reduce, ints, "sum", root))
            if rank == root:
                checks.equal(got, want, f"reduce={name} root={root}")
            else:
                checks.check(got is None, f"reduce={name} root={root}: non-root got {_show(got)}")
    # bad input, whatever the algorithm
    for name, coll in algorithms("reduce_scatter"):
        if p > 1:
            checks.raises(ValueError, partial(coll.reduce_scatter, np.ones(p + 1)),
                          f"reduce_scatter={name} of {p + 1} values")
        checks.raises(ValueError, partial(coll.reduce_scatter, np.ones(p, np.int64), "avg"),
                      f"reduce_scatter={name} avg of ints")
    for name, coll in algorithms("reduce"):
        checks.raises(ValueError, partial(coll.reduce, np.ones(3, np.int32), "avg"), f"reduce={name} avg of ints")
    _free(colls)


# -- section: async handles, out=, avg --------------------------------------------------------------

def section_async(comm: MPI.Comm, checks: Checks) -> None:
    p, rank = comm.size, comm.rank
    colls = _collectives(comm)
    sizes = _node_sizes(colls["allreduce", "auto"])
    names = [name for (c, name) in colls if c == "allreduce" and (name == "auto" or supported(c, name, p, sizes))]
    for name in names:
        coll = colls["allreduce", name]
        for dtype, shape in (("float64", (1001,)), ("float32", (3, 7)), ("int32", (1001,)), ("int64", (7,))):
            x = values(rank, math.prod(shape), dtype, salt=4).reshape(shape)
            y = values(rank, math.prod(shape), dtype, salt=5).reshape(shape)
            pristine = x.copy()
            total, biggest = np.empty_like(x), np.empty_like(y)
            comm.Allreduce(x, total, op=MPI.SUM)
            comm.Allreduce(y, biggest, op=MPI.MAX)
            where = f"allreduce={name} {dtype} {shape}"
            # one handle: wait, done, wait again
            handle = _attempt(checks, where, partial(coll.allreduce_async, x, "sum"))
            if handle is not FAILED:
                got = handle.wait()
                checks.close(got, total, f"{where} async sum")
                checks.check(handle.done(), f"{where}: done() is False after wait()")
                checks.check(handle.wait() is got, f"{where}: a second wait() returned another object")
                checks.same_everywhere(got, f"{where} async")
            # two in flight, completed in the opposite order
            h1 = _attempt(checks, where, partial(coll.allreduce_async, x, "sum"))
            h2 = _attempt(checks, where, partial(coll.allreduce_async, y, "max"))
            if h1 is not FAILED and h2 is not FAILED:
                checks.close(h2.wait(), biggest, f"{where} second handle (max) waited first")
                checks.close(h1.wait(), total, f"{where} first handle (sum) waited second")
            # out=
            out = np.full_like(x, -7)
            got = _attempt(checks, where, partial(coll.allreduce, x, "sum", out=out))
            checks.check(got is out, f"{where} out=: returned {type(got).__name__}, not out")
            checks.close(out, total, f"{where} out= contents")
            out2 = np.full_like(y, -7)
            handle = _attempt(checks, where, partial(coll.allreduce_async, y, "max", out=out2))
            if handle is not FAILED:
                checks.check(handle.wait() is out2, f"{where} async out=: wait() did not return out")
                checks.close(out2, biggest, f"{where} async out= contents")
            # the same buffers again (sizes planned onto MPI go straight there): new contents,
            # another op, another out, and back
            again, out3 = x.copy(), np.empty_like(x)
            for salt, op, target in ((6, "sum", out), (7, "sum", out), (7, "max", out), (8, "sum", out3),
                                     (9, "sum", out)):
                again[...] = values(rank, x.size, dtype, salt=salt).reshape(shape)
                want = np.empty_like(x)
                comm.Allreduce(again, want, op=MPI.SUM if op == "sum" else MPI.MAX)
                got = _attempt(checks, where, partial(coll.allreduce, again, op, out=target))
                checks.check(got is target, f"{where} repeated out=: did not return out")
                checks.close(target, want, f"{where} repeated buffers, salt {salt} {op}")
                if dtype == "float32" and op == "sum":  # quantize= in between keeps apart from exact
                    fresh = _attempt(checks, where, partial(coll.allreduce, again, quantize="int8"))
                    got = _attempt(checks, where, partial(coll.allreduce, again, out=target, quantize="int8"))
                    checks.equal(got, fresh, f"{where} repeated buffers, salt {salt}, int8 like a fresh call")
                    _attempt(checks, where, partial(coll.allreduce, again, op, out=target))
                    checks.close(target, want, f"{where} repeated buffers, salt {salt}, exact after int8")
            # out= of the wrong dtype or shape is refused (as MPICollective does), not silently cast
            wrong = np.zeros(shape, np.float32 if dtype != "float32" else np.float64)
            checks.raises(ValueError, partial(coll.allreduce, x, "sum", out=wrong),
                          f"{where} out= of dtype {wrong.dtype}")
            checks.raises(ValueError, partial(coll.allreduce, x, "sum", out=np.zeros(x.size + 1, dtype)),
                          f"{where} out= of {x.size + 1} elements")
            other = {(1001,): (7, 143), (3, 7): (7, 3), (7,): (7, 1)}[shape]
            checks.raises(ValueError, partial(coll.allreduce, x, "sum", out=np.zeros(other, dtype)),
                          f"{where} out= of shape {other}")
            # out= the input itself: reduced in place
            inplace = x.copy()
            got = _attempt(checks, f"{where} out=array (in place)",
                           partial(coll.allreduce, inplace, "sum", out=inplace))
            if got is not FAILED:
                checks.check(got is inplace, f"{where} out=array: did not return the array")
                checks.close(inplace, total, f"{where} out=array (in place) contents")
            # avg
            if dtype.startswith("float"):
                want = total / np.asarray(p, dtype)
                got = _attempt(checks, where, partial(coll.allreduce, x, "avg"))
                checks.close(got, want, f"{where} avg")
                checks.same_everywhere(got, f"{where} avg")
                out = np.empty_like(x)
                checks.check(_attempt(checks, where, partial(coll.allreduce, x, "avg", out=out)) is out,
                             f"{where} avg out=: not out")
                checks.close(out, want, f"{where} avg out= contents")
                handle = _attempt(checks, where, partial(coll.allreduce_async, x, "avg"))
                if handle is not FAILED:
                    checks.close(handle.wait(), want, f"{where} async avg")
            else:
                checks.raises(ValueError, partial(coll.allreduce, x, "avg"), f"{where} avg of integers")
                checks.raises(ValueError, partial(coll.allreduce_async, x, "avg"), f"{where} async avg of integers")
            checks.raises(ValueError, partial(coll.allreduce, x, "median"), f"{where} unknown op")
            checks.unchanged(x, pristine, where)
    _free(colls)


# -- section: quantized allreduce --------------------------------------------------------------------

def section_quantized(comm: MPI.Comm, checks: Checks) -> None:
    from mpiforge.comms.quantize import get_codec
    from mpiforge.topology.collective import TopologyCollective
    from mpiforge.topology.hierarchical import Hierarchy

    p, rank = comm.size, comm.rank
    auto = TopologyCollective(comm)
    forced = TopologyCollective(comm, algo="allreduce=hierarchical")
    hier = Hierarchy(comm)
    nodes = len(auto.topology.nodes)
    multi = nodes > 1
    for codec in CODECS:
        for n in (1, 7, 1001, 70001):
            operands = np.stack([signed_values(r, n) for r in range(p)])
            mine = operands[rank].copy()
            exact = operands.astype(np.float64).sum(axis=0)
            limit = quantization_bound(codec, operands, nodes)
            runs = {"auto": partial(auto.allreduce, mine, quantize=codec)}
            if multi:
                runs["allreduce=hierarchical"] = partial(forced.allreduce, mine, quantize=codec)
                for segments in (1, 3):
                    runs[f"Hierarchy segments={segments}"] = \
                        partial(hier.allreduce, mine, "sum", "ring", segments=segments, codec=get_codec(codec))
            for label, call in runs.items():
                what = f"{codec} {label} n={n} ({nodes} nodes)"
                got = _attempt(checks, what, call)
                if got is FAILED:
                    continue
                checks.check(got.dtype == np.float32 and got.shape == mine.shape, f"{what}: {_show(got)}")
                err = np.abs(got.astype(np.float64) - exact)
                worst = int(np.argmax(err - limit))
                checks.check(err[worst] <= limit[worst],
                              f"{what}: |error| {err[worst]:.3g} > bound {limit[worst]:.3g} at {worst} "
                              f"(exact {exact[worst]:.6g})")
                checks.same_everywhere(got, what)
                checks.unchanged(mine, operands[rank], what)
            # avg: the same bound, over p
            got = _attempt(checks, f"{codec} avg n={n}", partial(auto.allreduce, mine, "avg", quantize=codec))
            if got is not FAILED:
                err = np.abs(got.astype(np.float64) - exact / p)
                checks.check(np.all(err <= limit / p + np.abs(exact / p) * 2.0 ** -22),
                             f"{codec} avg n={n}: error {err.max():.3g} beyond the bound")
                checks.same_everywhere(got, f"{codec} avg n={n}")
        # where the cost model prefers the quantized plan, the data really is quantized (nodes of
        # equal size: the model prices the leaders' path of unequal nodes without the codec)
        if multi and len(set(_node_sizes(forced))) == 1:
            chosen = next((1 << k for k in range(12, 24) if _prefers_quantized(forced, 1 << k)), None)
            if checks.check(chosen is not None, f"{codec}: the cost model never prefers quantizing up to 8 MiB"):
                mine = integer_floats(rank, chosen // 4)  # exact sums in any order: a difference is the codec
                want = np.empty_like(mine)
                comm.Allreduce(mine, want)
                got = _attempt(checks, codec, partial(forced.allreduce, mine, quantize=codec))
                checks.check(got is FAILED or not np.array_equal(got, want),
                             f"{codec}: a {chosen}-byte allreduce the model plans quantized came back unquantized")
    # with one node there is no inter-node step to compress: the exact result
    if not multi:
        mine = integer_floats(rank, 1001)
        want = np.empty_like(mine)
        comm.Allreduce(mine, want)
        for codec in CODECS:
            checks.equal(_attempt(checks, f"{codec} on one node", partial(auto.allreduce, mine, quantize=codec)),
                         want, f"allreduce(quantize={codec!r}) on a single node")
            ctor = TopologyCollective(comm, quantize=codec)
            checks.equal(_attempt(checks, f"TopologyCollective(quantize={codec!r}) on one node",
                                  partial(ctor.allreduce, mine)),
                         want, f"TopologyCollective(quantize={codec!r}).allreduce on a single node")
            ctor.free()
    # a flat algorithm forced beside a codec: the flat algorithm, no error
    ring = TopologyCollective(comm, algo="allreduce=ring", quantize="int8")
    mine = integer_floats(rank, 1001)
    want = np.empty_like(mine)
    comm.Allreduce(mine, want)
    got = _attempt(checks, "algo=ring, quantize=int8", partial(ring.allreduce, mine))
    if got is not FAILED:
        limit = quantization_bound("int8", np.stack([integer_floats(r, 1001) for r in range(p)]), nodes)
        checks.check(np.all(np.abs(got - want) <= limit), "algo=ring, quantize=int8: beyond the int8 bound")
    ring.free()
    # what cannot be quantized
    x32 = integer_floats(rank, 64)
    checks.raises(ValueError, partial(auto.allreduce, x32, "max", quantize="int8"),
                  "allreduce(op='max', quantize='int8')")
    checks.raises(ValueError, partial(auto.allreduce, x32, quantize="int3"), "allreduce(quantize='int3')")
    checks.raises(ValueError, partial(TopologyCollective, comm, quantize="bf3"), "TopologyCollective(quantize='bf3')")
    checks.raises(ValueError, partial(hier.allreduce, x32, "max", codec=get_codec("int8")),
                  "Hierarchy.allreduce max + codec")
    checks.raises(ValueError, partial(hier.allreduce, x32.astype(np.float64), codec=get_codec("fp8")),
                  "Hierarchy.allreduce float64 + codec")
    # a codec set for the whole collective applies to sum/avg of float32 only: max stays exact
    ctor = TopologyCollective(comm, quantize="int8")
    want = np.empty_like(x32)
    comm.Allreduce(x32, want, op=MPI.MAX)
    checks.equal(_attempt(checks, "ctor int8 max", partial(ctor.allreduce, x32, "max")), want,
                 "TopologyCollective(quantize='int8').allreduce(op='max')")
    for coll in (auto, forced, ctor):
        coll.free()
    hier.free()


# -- section: pipelined segments --------------------------------------------------------------------

def section_segments(comm: MPI.Comm, checks: Checks) -> None:
    from mpiforge.topology.algorithms import FLAT_ALLREDUCE
    from mpiforge.topology.hierarchical import Hierarchy

    hier = Hierarchy(comm)
    for n in (1, 1001, 4099):
        mine = integer_floats(comm.rank, n)
        pristine = mine.copy()
        for op in ("sum", "max"):
            want = np.empty_like(mine)
            comm.Allreduce(mine, want, op=MPI_OPS[op])
            for inter in FLAT_ALLREDUCE:
                one = _attempt(checks, inter, partial(hier.allreduce, mine, op, inter, segments=1))
                checks.equal(one, want, f"Hierarchy {inter} {op} segments=1 n={n}")
                for segments in (2, 3, 16):
                    for depth in (1, 2):
                        what = f"Hierarchy {inter} {op} segments={segments} depth={depth} n={n}"
                        got = _attempt(checks, what,
                                       partial(hier.allreduce, mine, op, inter, segments=segments, depth=depth))
                        checks.equal(got, one, f"{what} vs segments=1")
                        checks.same_everywhere(got, what)
                checks.unchanged(mine, pristine, f"Hierarchy {inter} n={n}")
    hier.free()


# -- section: device arrays -------------------------------------------------------------------------

def _host_of(device) -> np.ndarray:
    """A host copy of a device array (through mpiforge's copy, as a GPU would need)."""
    from mpiforge.bindings import cuda_memory

    cai = device.__cuda_array_interface__
    host = np.empty(tuple(cai["shape"]), dtype=np.dtype(cai["typestr"]))
    cuda_memory.to_host(device, host.reshape(-1).view(np.uint8))
    return host


def section_device(comm: MPI.Comm, checks: Checks) -> None:
    from mpiforge.bindings.fake_cuda import FakeDeviceArray

    p, rank = comm.size, comm.rank
    colls = _collectives(comm)
    sizes = _node_sizes(colls["allreduce", "auto"])
    for collective, name in [("allreduce", "auto"), ("allreduce", "mpi"), ("allreduce", "ring"),
                             ("allreduce", "hierarchical")]:
        if not supported(collective, name, p, sizes):
            continue
        coll = colls[collective, name]
        for dtype in ("float32", "int64"):
            x = values(rank, 1001, dtype, salt=8)
            dev = FakeDeviceArray(x.copy())
            want = np.empty_like(x)
            comm.Allreduce(x, want)
            where = f"device allreduce={name} {dtype}"
            got = _attempt(checks, where, partial(coll.allreduce, dev))
            if checks.check(hasattr(got, "__cuda_array_interface__"), f"{where}: returned {type(got).__name__}"):
                checks.close(_host_of(got), want, where)
            out = FakeDeviceArray(np.zeros_like(x))
            ret = _attempt(checks, where, partial(coll.allreduce, dev, out=out))
            checks.check(ret is out, f"{where} out=: returned {type(ret).__name__}, not out")
            checks.close(out.host, want, f"{where} out= contents")
            handle = _attempt(checks, where, partial(coll.allreduce_async, dev, "max"))
            comm.Allreduce(x, want, op=MPI.MAX)
            if handle is not FAILED:
                got = handle.wait()
                checks.check(hasattr(got, "__cuda_array_interface__"), f"{where} async: {type(got).__name__}")
                if hasattr(got, "__cuda_array_interface__"):
                    checks.equal(_host_of(got), want, f"{where} async max")
            checks.unchanged(dev.host, x, where)
    for name in ("auto", "mpi", "binomial", "hierarchical"):
        if not supported("bcast", name, p, sizes):
            continue
        root = p - 1
        buf = values(root, 77, "float64", salt=9) if rank == root else np.zeros(77)
        dev = FakeDeviceArray(buf)
        got = _attempt(checks, name, partial(colls["bcast", name].broadcast, dev, root))
        checks.check(got is dev, f"device bcast={name}: returned {type(got).__name__}, not the array")
        checks.equal(buf, values(root, 77, "float64", salt=9), f"device bcast={name} root={root}: filled in place")
    coll = colls["allreduce", "auto"]
    x = values(rank, 7 * p, "int32", salt=10)
    want = np.empty(7, np.int32)
    comm.Reduce_scatter_block(x, want)
    got = _attempt(checks, "device reduce_scatter", partial(coll.reduce_scatter, FakeDeviceArray(x)))
    if checks.check(hasattr(got, "__cuda_array_interface__"), f"device reduce_scatter: {type(got).__name__}"):
        checks.equal(_host_of(got), want, "device reduce_scatter")
    want = np.empty((p, 7 * p), np.int32)
    comm.Allgather(x, want)
    got = _attempt(checks, "device allgather", partial(coll.allgather, FakeDeviceArray(x)))
    if checks.check(hasattr(got, "__cuda_array_interface__"), f"device allgather: {type(got).__name__}"):
        checks.equal(_host_of(got), want, "device allgather")
    want = np.empty_like(x) if rank == 0 else None
    comm.Reduce(x, want, root=0)
    got = _attempt(checks, "device reduce", partial(coll.reduce, FakeDeviceArray(x), "sum", 0))
    if rank == 0 and checks.check(hasattr(got, "__cuda_array_interface__"), f"device reduce: {type(got).__name__}"):
        checks.equal(_host_of(got), want, "device reduce")
    if rank != 0:
        checks.check(got is None, f"device reduce: non-root rank got {type(got).__name__}")
    _free(colls)


# -- section: the emulated cluster's check (tests/test_cluster.py) ----------------------------------

def section_cluster(comm: MPI.Comm, checks: Checks) -> None:
    """Allreduce (auto, hierarchical, int8), reduce_scatter, allgather, bcast and reduce against MPI."""
    from mpiforge.topology.collective import TopologyCollective

    p, rank = comm.size, comm.rank
    auto = TopologyCollective(comm)
    hier = TopologyCollective(comm, algo="allreduce=hierarchical,reduce_scatter=hierarchical,"
                                         "allgather=hierarchical,bcast=hierarchical,reduce=hierarchical")
    checks.check(auto.topology.source == "discovered" and len(auto.topology.nodes) > 1,
                 f"the cluster's nodes were not discovered: {auto.topology.describe()}")
    for n in (7, 1001, 65536):
        for dtype in ("float32", "int64"):
            mine = values(rank, n, dtype)
            for op in ("sum", "max"):
                want = np.empty_like(mine)
                comm.Allreduce(mine, want, op=MPI_OPS[op])
                for label, coll in (("auto", auto), ("hierarchical", hier)):
                    what = f"allreduce {label} {op} {dtype} n={n}"
                    got = _attempt(checks, what, partial(coll.allreduce, mine, op))
                    checks.close(got, want, what)
                    checks.same_everywhere(got, what)
            full = values(rank, n * p, dtype, salt=1)
            want = np.empty(n, dtype)
            comm.Reduce_scatter_block(full, want)
            gathered = np.empty((p, n), dtype)
            comm.Allgather(mine, gathered)
            reduced = np.empty_like(mine) if rank == p - 1 else None
            comm.Reduce(mine, reduced, root=p - 1)
            for label, coll in (("auto", auto), ("hierarchical", hier)):
                checks.close(_attempt(checks, label, partial(coll.reduce_scatter, full)), want,
                             f"reduce_scatter {label} {dtype} n={n}")
                checks.equal(_attempt(checks, label, partial(coll.allgather, mine)), gathered,
                             f"allgather {label} {dtype} n={n}")
                buf = mine.copy() if rank == 1 else np.zeros_like(mine)
                _attempt(checks, label, partial(coll.broadcast, buf, 1))
                checks.equal(buf, values(1, n, dtype), f"bcast {label} root=1 {dtype} n={n}")
                got = _attempt(checks, label, partial(coll.reduce, mine, "sum", p - 1))
                if rank == p - 1:
                    checks.close(got, reduced, f"reduce {label} {dtype} n={n}")
                else:
                    checks.check(got is None, f"reduce {label}: non-root got {_show(got)}")
        operands = np.stack([signed_values(r, n) for r in range(p)])
        limit = quantization_bound("int8", operands, len(auto.topology.nodes))
        for label, coll in (("auto", auto), ("hierarchical", hier)):
            what = f"allreduce {label} int8 n={n}"
            got = _attempt(checks, what, partial(coll.allreduce, operands[rank], quantize="int8"))
            if got is not FAILED:
                err = np.abs(got - operands.astype(np.float64).sum(axis=0))
                checks.check(np.all(err <= limit), f"{what}: error {err.max():.3g} beyond the int8 bound")
                checks.same_everywhere(got, what)
                if label == "hierarchical" and _prefers_quantized(coll, got.nbytes):
                    ints = integer_floats(rank, n)  # sums exact in any order: a difference is the codec
                    want = np.empty_like(ints)
                    comm.Allreduce(ints, want)
                    approx = _attempt(checks, what, partial(coll.allreduce, ints, quantize="int8"))
                    checks.check(approx is FAILED or not np.array_equal(approx, want),
                                 f"{what}: planned quantized, came back exact")
    auto.free()
    hier.free()


SECTIONS = {"matrix": section_matrix, "async": section_async, "quantized": section_quantized,
            "segments": section_segments, "device": section_device, "cluster": section_cluster}


def body_sections(comm: MPI.Comm, outdir: str, jobs: list[list]) -> None:
    """Run ``jobs``, each [key, MPIFORGE_TOPOLOGY (None: leave the environment alone), section];
    after each, this rank's record goes to outdir/sections-<rank>.json under ``key``.

    Several layouts share one launch: discovery reads MPIFORGE_TOPOLOGY whenever a collective is
    built, and every section builds its own."""
    record: dict[str, dict] = {}
    path = Path(outdir, f"sections-{comm.rank}.json")
    for key, topology, name in jobs:
        if topology is not None:
            os.environ["MPIFORGE_TOPOLOGY"] = topology
        checks = Checks(comm)
        start = time.perf_counter()
        try:
            SECTIONS[name](comm, checks)
            checks.settle()
        except Exception:  # noqa: BLE001 - an unexpected error ends the section, not the job
            checks.failures.append(f"raised:\n{traceback.format_exc()}")
        record[key] = {"failures": checks.failures, "checks": checks.count,
                       "seconds": round(time.perf_counter() - start, 3)}
        path.write_text(json.dumps(record))


def read_sections(outdir: str | Path, nprocs: int) -> dict[str, list[str]]:
    """{key: failures of every rank} from the records of ``body_sections``; a job some rank did
    not finish is reported as such."""
    records = []
    for rank in range(nprocs):
        f = Path(outdir, f"sections-{rank}.json")
        records.append(json.loads(f.read_text()) if f.exists() else {})
    keys = {key for record in records for key in record}
    out: dict[str, list[str]] = {}
    for key in keys:
        ranks_of: dict[str, list[int]] = {}  # failure -> the ranks that saw it, in first-seen order
        for rank, record in enumerate(records):
            if key not in record:
                own = ["did not finish the section"]
            else:
                own = record[key]["failures"][:MAX_REPORTED]
                if len(record[key]["failures"]) > MAX_REPORTED:
                    own.append(f"... and {len(record[key]['failures']) - MAX_REPORTED} more")
                if record[key]["checks"] == 0 and not own:
                    own = ["the section checked nothing"]
            for failure in own:
                ranks_of.setdefault(failure, []).append(rank)
        out[key] = [f"rank{'s' * (len(r) > 1)} {','.join(map(str, r))}: {f}" for f, r in ranks_of.items()]
    return out


# -- the launches ---------------------------------------------------------------------------------

ALL = ("matrix", "async", "quantized", "segments", "device")
LAYOUTS = {  # id: (ranks, MPIFORGE_TOPOLOGY, sections)
    "1rank": (1, "nodes=1", ALL),
    "2ranks-1node": (2, "nodes=1", ("matrix", "async", "quantized")),
    "2ranks-2nodes": (2, "nodes=2", ALL),
    "3ranks-1node": (3, "nodes=1", ("matrix", "async")),
    "3ranks-block-2+1": (3, "nodes=2", ("matrix", "quantized", "segments")),
    "3ranks-roundrobin-2+1": (3, "nodes=2,placement=roundrobin", ("matrix", "async", "quantized", "device")),
    "3ranks-3nodes": (3, "nodes=3", ("matrix", "quantized")),
    "4ranks-block-2x2": (4, "nodes=2", ("matrix", "async", "quantized")),
    "4ranks-roundrobin-2x2": (4, "nodes=2,placement=roundrobin", ALL),
    "4ranks-irregular-0110": (4, "0,1,1,0", ("matrix", "segments")),
}


class Launches:
    """One mpiexec launch per rank count, for all the layouts of that count, started by the first
    test that needs one of them."""

    def __init__(self) -> None:
        self.results: dict[int, tuple[dict, str]] = {}

    def failures(self, layout: str, section: str) -> list[str]:
        nprocs = LAYOUTS[layout][0]
        if nprocs not in self.results:
            jobs = [[f"{name}/{sec}", topology, sec] for name, (n, topology, sections) in LAYOUTS.items()
                    if n == nprocs for sec in sections]
            error = ""
            with tempfile.TemporaryDirectory(prefix="mpiforge-topo-") as outdir:
                try:
                    run_ranks(body_sections, nprocs, TIMEOUT, args=(outdir, jobs), env=ENV)
                except MPIRunError as exc:
                    error = str(exc)
                self.results[nprocs] = (read_sections(outdir, nprocs), error)
        found, error = self.results[nprocs]
        key = f"{layout}/{section}"
        if key not in found:
            return [f"the launch ended before {key} ran: {error or 'no record'}"]
        return found[key] + ([f"the launch failed: {error}"] if error and found[key] else [])


@pytest.fixture(scope="module")
def launches() -> Launches:
    return Launches()


def _report(found: list[str], section: str, layout: str) -> None:
    nprocs, topology, _ = LAYOUTS[layout]
    assert not found, f"{section} on {nprocs} rank(s), MPIFORGE_TOPOLOGY={topology}:\n" + "\n".join(found)


SECTION_TITLES = {"matrix": "every algorithm vs MPI", "async": "async / out= / avg", "quantized": "quantized allreduce",
            "segments": "pipelined segments", "device": "device arrays"}


@pytest.mark.mpi
@pytest.mark.parametrize("section,layout", [
    pytest.param(section, layout, id=f"{section}-{layout}")
    for section in SECTION_TITLES for layout, (_, _, sections) in LAYOUTS.items() if section in sections])
def test_collectives_match_mpi(launches: Launches, section: str, layout: str) -> None:
    """One mpiexec launch per rank count runs every section; each (section, layout) reports here."""
    _report(launches.failures(layout, section), SECTION_TITLES[section], layout)


# -- the cost model (no MPI job) ----------------------------------------------------------------

def machines() -> dict:
    from mpiforge.topology.cost import Machine

    return {
        "1x4": Machine.cluster(1, 4),
        "2x2-block": Machine.cluster(2, 2),
        "3x2-roundrobin": Machine.cluster(3, 2, placement="roundrobin"),
        "4x1": Machine.cluster(4, 1),
        "256x8": Machine.cluster(256, 8),
    }


def _plans(machine, collective: str):
    """(algorithm, inter, segments) of every plan the machine supports for ``collective``."""
    from mpiforge.topology.cost import ALGORITHMS, FLAT_ALLREDUCE

    for algorithm in ALGORITHMS[collective]:
        if not machine.supports(collective, algorithm):
            continue
        if algorithm == "hierarchical" and collective == "allreduce":
            for inter in FLAT_ALLREDUCE:
                for segments in (1, 4):
                    yield algorithm, inter, segments
        else:
            yield algorithm, None, 1


@pytest.mark.parametrize("name", ["1x4", "2x2-block", "3x2-roundrobin", "4x1", "256x8"])
def test_predictions_positive_and_growing(name: str) -> None:
    machine = machines()[name]
    sizes = [1 << k for k in (10, 14, 18, 22, 26)]
    for collective in COLLECTIVES:
        for algorithm, inter, segments in _plans(machine, collective):
            times = [machine.predict(collective, algorithm, n, inter, segments) for n in sizes]
            what = f"{name} {collective} {algorithm} inter={inter} segments={segments}: {times}"
            assert all(t > 0 and math.isfinite(t) for t in times), what
            assert all(a < b for a, b in pairwise(times)), what
    if len(machine.groups(0)) > 1:
        times = [machine.predict("allreduce", "hierarchical", n, "ring", 1, quantized=True) for n in sizes]
        assert all(t > 0 for t in times) and all(a < b for a, b in pairwise(times)), times


def test_round_robin_ring_costs_more_than_hierarchical() -> None:
    from mpiforge.topology.cost import FLAT_ALLREDUCE

    machine = machines()["3x2-roundrobin"]
    n = 64 << 20
    hierarchical = machine.best("allreduce", n, candidates=["hierarchical"])
    assert hierarchical.algorithm == "hierarchical"
    for flat in FLAT_ALLREDUCE:
        assert machine.predict("allreduce", flat, n) > hierarchical.seconds, flat
    assert machine.predict("allreduce", "ring", n) > machine.predict("allreduce", "hierarchical", n, "ring")
    assert machine.best("allreduce", n, candidates=["ring", "recursive_doubling", "rabenseifner", "hierarchical"]) \
        .algorithm == "hierarchical"


@pytest.mark.parametrize("name", ["2x2-block", "3x2-roundrobin", "4x1", "256x8"])
def test_quantized_hierarchical_faster_at_16_mib(name: str) -> None:
    machine = machines()[name]
    n = 16 << 20
    for segments in (1, 4):
        assert machine.predict("allreduce", "hierarchical", n, "ring", segments, quantized=True) \
            < machine.predict("allreduce", "hierarchical", n, "ring", segments, quantized=False), segments
    quick = machine.best("allreduce", n, quantized=True)
    assert quick.algorithm == "hierarchical" and quick.inter == "ring"
    assert quick.seconds < machine.best("allreduce", n, candidates=["hierarchical"]).seconds


@pytest.mark.parametrize("name", ["1x4", "2x2-block", "3x2-roundrobin", "4x1", "256x8"])
def test_best_is_supported(name: str) -> None:
    from mpiforge.topology.cost import ALGORITHMS, FLAT_ALLREDUCE, SEGMENTS

    machine = machines()[name]
    node_sizes = [len(g) for g in machine.groups(0)]
    for collective in COLLECTIVES:
        for nbytes in (8, 4096, 1 << 20, 64 << 20) if machine.size < 64 else (4096, 64 << 20):
            plan = machine.best(collective, nbytes)
            what = f"{name} {collective} {nbytes}: {plan}"
            assert plan.algorithm in ALGORITHMS[collective], what
            assert machine.supports(collective, plan.algorithm), what
            assert supported(collective, plan.algorithm, machine.size, node_sizes), what
            assert plan.seconds > 0 and plan.segments in SEGMENTS, what
            if plan.algorithm == "hierarchical" and collective == "allreduce":
                assert plan.inter in FLAT_ALLREDUCE, what
            alone = machine.best(collective, nbytes, candidates=[plan.algorithm])
            assert alone.seconds == pytest.approx(plan.seconds), what


def test_supports_follows_the_constraints() -> None:
    from mpiforge.topology.cost import ALGORITHMS

    for name, machine in machines().items():
        node_sizes = [len(g) for g in machine.groups(0)]
        for collective in COLLECTIVES:
            for algorithm in ALGORITHMS[collective]:
                assert machine.supports(collective, algorithm) == \
                    supported(collective, algorithm, machine.size, node_sizes), (name, collective, algorithm)


def test_recursive_halving_needs_a_power_of_two() -> None:
    from mpiforge.topology.cost import Machine

    three = Machine.cluster(1, 3)
    assert not three.supports("reduce_scatter", "recursive_halving")
    assert not three.supports("allgather", "recursive_doubling")
    assert three.supports("reduce_scatter", "ring")
    for nbytes in (8, 1 << 20):
        assert three.best("reduce_scatter", nbytes).algorithm != "recursive_halving"
    with pytest.raises(ValueError):
        three.best("reduce_scatter", 1024, candidates=["recursive_halving"])
    assert Machine.cluster(1, 4).supports("reduce_scatter", "recursive_halving")


def test_mpi_times_interpolate() -> None:
    from mpiforge.topology.cost import Machine

    measured = {"allreduce": ((1024, 1e-4), (1 << 20, 1e-2))}
    machine = Machine.cluster(2, 2, mpi_times=measured)
    middle = machine.predict("allreduce", "mpi", 32768)
    assert 1e-4 < middle < 1e-2
    assert machine.predict("allreduce", "mpi", 1024) == pytest.approx(1e-4)
    assert machine.predict("allreduce", "mpi", 1 << 20) == pytest.approx(1e-2)
    grid = [machine.predict("allreduce", "mpi", n) for n in (2048, 8192, 32768, 131072, 524288)]
    assert all(a < b for a, b in pairwise(grid)), grid
    assert machine.predict("allreduce", "mpi", 4 << 20) > 1e-2  # beyond the measurements it still grows
    # the other collectives, unmeasured, keep the model's own estimate
    assert machine.predict("bcast", "mpi", 32768) == Machine.cluster(2, 2).predict("bcast", "mpi", 32768)


def test_token_bucket_hides_bytes_up_to_its_depth() -> None:
    """A tbf link passes ``burst`` bytes at ``line`` speed after idling: a transfer that fits
    costs line time, a longer one pays the rate for the rest, a plain link always the rate."""
    from mpiforge.topology.cost import Link, Machine

    rate, line = 1 / 125e6, 1 / 500e6
    plain = Machine.cluster(2, 1, inter=Link(50e-6, rate), overhead=0.0, gamma=0.0)
    bucket = plain.with_figures(links=(Link(50e-6, rate, burst=500e3, line=line), plain.links[1]))
    free = plain.with_figures(links=(Link(50e-6, rate, burst=500e3), plain.links[1]))
    alpha = 50e-6
    for nbytes in (100e3, 2e6):  # a 2-node ring allreduce of 2n bytes: n in each of its two steps
        steps = bucket._flat("allreduce", "ring", 2 * nbytes)
        hidden = min(nbytes, 500e3)
        first = alpha + hidden * line + (nbytes - hidden) * rate
        refill = (alpha + hidden * line) / rate if nbytes > 500e3 else 500e3  # tokens back in the meantime
        again = min(nbytes, refill)
        second = alpha + again * line + (nbytes - again) * rate
        assert bucket.seconds(steps) == pytest.approx(first + second)
        assert plain.seconds(steps) == pytest.approx(2 * (alpha + nbytes * rate))
        assert free.seconds(steps) < bucket.seconds(steps) < plain.seconds(steps)
    # pipelined: later segments cannot beat the rate, whatever the bucket hid in the first
    n = 64 << 20
    for segments in (4, 16):
        t = bucket.predict("allreduce", "hierarchical", n, "ring", segments)
        assert t >= n * rate * (segments - 1) / segments


def test_call_costs_are_added_once_per_call_of_ours() -> None:
    from mpiforge.topology.cost import Machine

    base = Machine.cluster(2, 2, placement="roundrobin")
    costly = base.with_figures(call=1e-3, codec_call=5e-4)
    for segments in (1, 8):
        exact = base.predict("allreduce", "hierarchical", 1 << 20, "ring", segments)
        assert costly.predict("allreduce", "hierarchical", 1 << 20, "ring", segments) == pytest.approx(exact + 1e-3)
        quantized = base.predict("allreduce", "hierarchical", 1 << 20, "ring", segments, True)
        assert costly.predict("allreduce", "hierarchical", 1 << 20, "ring", segments, True) == \
            pytest.approx(quantized + 1.5e-3)
    assert costly.predict("allreduce", "ring", 1 << 20) == pytest.approx(base.predict("allreduce", "ring", 1 << 20) + 1e-3)
    assert costly.predict("allreduce", "mpi", 1 << 20) == base.predict("allreduce", "mpi", 1 << 20)


def test_own_times_replace_the_model_inside_the_measured_sizes() -> None:
    from mpiforge.topology.cost import Machine, plan_key

    model = Machine.cluster(2, 2, placement="roundrobin")
    # calibration found one segment fastest at 1-4 MiB where the model prefers pipelining
    key = plan_key("allreduce", "hierarchical", "ring", 1, True)
    measured = {key: ((1 << 20, 1e-3), (4 << 20, 4e-3))}
    machine = Machine.cluster(2, 2, placement="roundrobin", own_times=measured)
    assert machine.predict("allreduce", "hierarchical", 2 << 20, "ring", 1, True) == pytest.approx(2e-3)
    assert machine.best("allreduce", 4 << 20, quantized=True).segments == 1
    # outside the measured sizes, and for plans not measured, the model as before
    for args in ((16 << 20, "ring", 1, True), (2 << 20, "ring", 2, True), (2 << 20, "ring", 1, False)):
        assert machine.predict("allreduce", "hierarchical", *args) == model.predict("allreduce", "hierarchical", *args)


def test_profile_keeps_measured_times_per_job(tmp_path) -> None:
    from mpiforge.topology.discovery import RankPlace, Topology
    from mpiforge.topology.profile import machine_for, save

    path = tmp_path / "topology.json"
    save({"own_times": {"2x2:roundrobin": {"allreduce/ring/x1/quantized": [[1024, 1e-4]]}}}, path)
    save({"gamma": 1e-9, "own_times": {"3x2:roundrobin": {"allreduce/ring/x2": [[1024, 2e-4]]}}}, path)
    stored = json.loads(path.read_text())
    assert set(stored["own_times"]) == {"2x2:roundrobin", "3x2:roundrobin"} and stored["gamma"] == 1e-9
    places = tuple(RankPlace(rank=r, node=r % 2, local_rank=r // 2, hostname=f"n{r % 2}") for r in range(4))
    machine = machine_for(Topology(places), stored)
    assert machine.own_times == {"allreduce/ring/x1/quantized": ((1024, 1e-4),)}
