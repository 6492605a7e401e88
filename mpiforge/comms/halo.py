"""A 3-D halo exchange with all 26 neighbours on a periodic Cartesian grid, three ways.

    cart = cartesian(MPI.COMM_WORLD)             # MPI.Compute_dims, periodic in x, y, z
    with Halo3D(cart, n=64, h=1) as halo:
        grid = halo.initial_grid()               # deterministic, a function of global coordinates
        grid = halo.iterate(grid, 10, "mpi")     # 10 x (exchange, 27-point stencil)
        total = halo.checksum(grid)              # collective

Modes of ``exchange``:

- ``mpi``: 26 ``Irecv`` then 26 ``Isend`` of subarray datatypes (faces, edges, corners) on the
  communicator as given, completed by ``MPI.Request.Waitall`` (looked up at call time, so an
  unmodified program run by ``mpiforge run`` is interposed);
- ``numpy``: every region copied with numpy slicing into a contiguous buffer, sent as float64,
  copied back into the halo after ``Waitall``;
- ``mpiforge``: the calls of ``mpi`` on ``Comm(cart, method=...)``, the interposed
  communicator, which packs or sends natively per message (``method`` forces one).

The local grid is ``(n + 2h)**3`` float64 in C order (axis 0 is x, the slowest). A message is
tagged with the direction it travels, so messages match even where a periodic dimension of
size 1 or 2 makes one rank the neighbour on both sides, or a rank its own neighbour.

Values: the interior starts as integers 0..255 hashed from global coordinates (halo cells
NaN); the stencil weighs the 27 points 8, 4, 2, 1 (centre, faces, edges, corners) / 64, whose
arithmetic is exact on such data for 7 steps: any correct implementation, in any order of
summation, gives the same bits.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from mpi4py import MPI

from .comm import Comm, Interposed
from .methods import Method
from .requests import Request

__all__ = [
    "MODES", "DIRECTIONS", "Neighbour", "Halo3D", "Verification", "cartesian", "stencil27",
    "global_values", "bits_equal", "compare", "sample_exchanges", "time_exchanges",
]

log = logging.getLogger(__name__)

MODES = ("mpi", "numpy", "mpiforge")
Offset = tuple[int, int, int]
# the 26 directions to the neighbours; a message's tag is the index of the direction it travels
DIRECTIONS: tuple[Offset, ...] = tuple(d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0))
_TAG = {d: i for i, d in enumerate(DIRECTIONS)}


def cartesian(comm: MPI.Comm) -> MPI.Cartcomm:
    """A periodic 3-D Cartesian communicator over all of ``comm`` (dims from MPI.Compute_dims)."""
    dims = MPI.Compute_dims(comm.size, 3)
    return comm.Create_cart(dims, periods=[True] * 3, reorder=False)


def global_values(axes: list[np.ndarray], global_shape: tuple[int, int, int]) -> np.ndarray:
    """Initial values on the box spanned by ``axes`` (global coordinates along x, y, z, wrapped
    periodically): integers 0..255 as float64, hashed from the global flat index."""
    gx, gy, gz = (np.asarray(a, np.int64) % s for a, s in zip(axes, global_shape))
    flat = (gx[:, None, None] * global_shape[1] + gy[None, :, None]) * global_shape[2] + gz[None, None, :]
    return ((flat.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(56)).astype(np.float64)


def stencil27(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One 27-point step into ``out`` (``src`` less one cell on every side): each point becomes
    the sum over its 3x3x3 neighbourhood of weight x value / 64, the weights 8 (centre), 4 (faces),
    2 (edges), 1 (corners). Computed as the [1, 2, 1] sum along x, then y, then z."""
    if min(src.shape) < 3:
        raise ValueError(f"stencil27 needs at least 3 cells per side, got shape {src.shape}")
    smoothed = src
    for axis in range(3):
        lo, mid, hi = (smoothed[(slice(None),) * axis + (slice(k, smoothed.shape[axis] - 2 + k),)]
                       for k in range(3))
        smoothed = lo + hi
        smoothed += mid
        smoothed += mid
    return np.multiply(smoothed, 1.0 / 64.0, out=out)  # a power of two: exact


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two float64 arrays hold the same bits (NaN-safe, tells -0.0 from 0.0)."""
    return a.shape == b.shape and np.array_equal(np.ascontiguousarray(a).view(np.uint64),
                                                 np.ascontiguousarray(b).view(np.uint64))


@dataclass
class Neighbour:
    """One of the 26 neighbours: what goes there, what comes from there, and how."""

    offset: Offset  # direction to the neighbour, each component -1, 0 or +1
    rank: int
    send_type: MPI.Datatype  # interior region next to that side
    recv_type: MPI.Datatype  # halo region on that side
    send_region: tuple[slice, ...]  # the same regions as numpy slices (mode "numpy")
    recv_region: tuple[slice, ...]
    send_buf: np.ndarray  # contiguous staging for mode "numpy"
    recv_buf: np.ndarray

    @property
    def name(self) -> str:
        """``x+``, ``x-y+``, ``x+y+z-``..."""
        return "".join(axis + ("-" if d < 0 else "+") for axis, d in zip("xyz", self.offset) if d)

    @property
    def kind(self) -> str:
        return ("face", "edge", "corner")[sum(map(abs, self.offset)) - 1]

    @property
    def send_tag(self) -> int:
        return _TAG[self.offset]  # the data travels towards the neighbour

    @property
    def recv_tag(self) -> int:
        return _TAG[tuple(-d for d in self.offset)]  # its data travels towards us

    @property
    def nbytes(self) -> int:
        return self.send_buf.nbytes


@dataclass
class Verification:
    """Outcome of ``compare``: for each grid, the ranks where it differs from the reference."""

    nranks: int
    reference: str
    differ: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.differ.values())


class Halo3D:
    """A rank's box of a periodic 3-D grid and its exchanges with all 26 neighbours."""

    def __init__(self, cart: MPI.Cartcomm, n: int, h: int = 1) -> None:
        if not isinstance(cart, MPI.Cartcomm) or cart.Get_dim() != 3:
            raise ValueError("Halo3D needs a 3-D Cartesian communicator: build one with cartesian(comm)")
        dims, periods, coords = cart.Get_topo()
        if not all(periods):
            raise ValueError(f"Halo3D needs a periodic grid, got periods {periods}: build it with cartesian(comm)")
        if n < 1 or not 1 <= h <= n:
            raise ValueError(f"need n >= 1 and 1 <= halo <= n, got n={n}, halo={h}: widen n or narrow the halo")
        self.comm, self.n, self.h = cart, n, h
        self.dims, self.coords = tuple(dims), tuple(coords)
        self.shape = (n + 2 * h,) * 3
        self.global_shape = tuple(d * n for d in dims)
        self.neighbours = [self._neighbour(offset) for offset in DIRECTIONS]
        self._interposed: dict[Method | None, Interposed] = {}
        log.debug("rank %d: dims %s coords %s, %d distinct neighbour ranks", cart.rank, self.dims, self.coords,
                  len({nb.rank for nb in self.neighbours}))

    def _neighbour(self, offset: Offset) -> Neighbour:
        n, h = self.n, self.h
        rank = self.comm.Get_cart_rank([(c + d) % s for c, d, s in zip(self.coords, offset, self.dims)])
        send_start = {-1: h, 0: h, 1: n}
        recv_start = {-1: 0, 0: h, 1: n + h}
        sizes = [n if d == 0 else h for d in offset]
        send = [send_start[d] for d in offset]
        recv = [recv_start[d] for d in offset]

        def box(starts: list[int]) -> MPI.Datatype:
            return MPI.DOUBLE.Create_subarray(self.shape, sizes, starts, order=MPI.ORDER_C).Commit()

        def region(starts: list[int]) -> tuple[slice, ...]:
            return tuple(slice(s, s + z) for s, z in zip(starts, sizes))

        return Neighbour(offset, rank, box(send), box(recv), region(send), region(recv),
                         np.empty(sizes), np.empty(sizes))

    # -- grids --

    @property
    def interior(self) -> tuple[slice, ...]:
        return (slice(self.h, self.h + self.n),) * 3

    def values(self, extra: int) -> np.ndarray:
        """Initial values on the interior grown by ``extra`` cells on every side (periodic)."""
        axes = [np.arange(c * self.n - extra, (c + 1) * self.n + extra) for c in self.coords]
        return global_values(axes, self.global_shape)

    def initial_grid(self) -> np.ndarray:
        """A new local grid: interior from ``global_values``, halo cells NaN."""
        grid = np.full(self.shape, np.nan)
        grid[self.interior] = self.values(0)
        return grid

    def exchanged_initial_grid(self) -> np.ndarray:
        """What ``initial_grid()`` holds after one correct exchange (every halo cell filled)."""
        return self.values(self.h)

    def expected_interior(self, iters: int) -> np.ndarray:
        """The interior after ``iters`` steps, computed on this rank alone (no exchange): the
        initial values on a box ``iters`` cells wider, then ``iters`` stencil steps."""
        box = self.values(iters)
        for _ in range(iters):
            box = stencil27(box)
        return box

    def step(self, grid: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The 27-point stencil on ``grid``'s interior (halo exchanged) into ``out``'s; returns ``out``."""
        h, n = self.h, self.n
        stencil27(grid[h - 1:h + n + 1, h - 1:h + n + 1, h - 1:h + n + 1], out[self.interior])
        return out

    def iterate(self, grid: np.ndarray, iters: int, mode: str = "mpi", method: Method | str | None = None
                ) -> np.ndarray:
        """``iters`` times: exchange (``mode``) then step; returns the grid holding the result.

        Two buffers alternate (``grid`` is one); the returned grid's halo cells hold whatever
        its last exchange left there.
        """
        spare = np.full(self.shape, np.nan)
        for _ in range(iters):
            self.exchange(grid, mode, method)
            grid, spare = self.step(grid, spare), grid
        return grid

    def checksum(self, grid: np.ndarray) -> float:
        """Sum of every rank's interior; collective."""
        return self.comm.allreduce(float(np.sum(grid[self.interior])), op=MPI.SUM)

    # -- exchanges --

    def exchange(self, grid: Any, mode: str = "mpi", method: Method | str | None = None) -> None:
        """Fill every halo cell of ``grid`` from the 26 neighbours; collective.

        ``grid`` is a float64 array of ``self.shape`` (modes ``mpi`` and ``mpiforge`` also take
        device buffers, anything exposing ``__cuda_array_interface__``). ``method`` (``mpiforge``
        only) forces how the interposed communicator sends: native, host, device, staged, oneshot.
        """
        if mode == "mpi":
            self._no_method(mode, method)
            self._typed(self.comm, grid, MPI.Request.Waitall)
        elif mode == "mpiforge":
            self._typed(self.interposed(method), grid, Request.Waitall)
        elif mode == "numpy":
            self._no_method(mode, method)
            self._numpy(grid)
        else:
            raise ValueError(f"unknown exchange mode {mode!r}: expected one of {', '.join(MODES)}")

    @staticmethod
    def _no_method(mode: str, method: Method | str | None) -> None:
        if method not in (None, "auto"):
            raise ValueError(f"method={method!r} applies to mode 'mpiforge' only, not {mode!r}")

    def interposed(self, method: Method | str | None = None) -> Interposed:
        """``Comm`` over this grid's communicator, forcing ``method`` (None or "auto": the model).

        Made once per method, collectively (``Comm`` learns where the peers live).
        """
        key = None if method in (None, "auto") else _method(method)
        comm = self._interposed.get(key)
        if comm is None:
            # a plain handle first: Comm() returns an interposed communicator as it is, method and all
            comm = self._interposed[key] = Comm(MPI.Cartcomm(self.comm), method=key)
        return comm

    def _typed(self, comm: MPI.Cartcomm, grid: Any, waitall: Callable[[list], Any]) -> None:
        requests = [comm.Irecv([grid, 1, nb.recv_type], nb.rank, nb.recv_tag) for nb in self.neighbours]
        requests += [comm.Isend([grid, 1, nb.send_type], nb.rank, nb.send_tag) for nb in self.neighbours]
        waitall(requests)

    def _numpy(self, grid: np.ndarray) -> None:
        if not isinstance(grid, np.ndarray):
            raise TypeError(f"mode 'numpy' packs with numpy slicing and needs a numpy array, got "
                            f"{type(grid).__name__}: use mode 'mpiforge' for device buffers")
        comm = self.comm
        requests = [comm.Irecv([nb.recv_buf, MPI.DOUBLE], nb.rank, nb.recv_tag) for nb in self.neighbours]
        for nb in self.neighbours:
            nb.send_buf[...] = grid[nb.send_region]
            requests.append(comm.Isend([nb.send_buf, MPI.DOUBLE], nb.rank, nb.send_tag))
        MPI.Request.Waitall(requests)
        for nb in self.neighbours:
            grid[nb.recv_region] = nb.recv_buf

    def methods_chosen(self, grid: Any, method: Method | str | None = None,
                       neighbours: list[Neighbour] | None = None) -> Counter:
        """How many of this rank's messages (to and from ``neighbours``, default all: 26 sends and
        26 receives) mode ``mpiforge`` sends by each method; collective the first time a
        ``method`` is used (see ``interposed``)."""
        comm = self.interposed(method)
        return Counter(comm.method_for([grid, 1, dt], sending=sending, peer=nb.rank).value
                       for nb in (self.neighbours if neighbours is None else neighbours)
                       for dt, sending in ((nb.send_type, True), (nb.recv_type, False)))

    def free(self) -> None:
        """Free the 52 datatypes (the communicator stays the caller's)."""
        for nb in self.neighbours:
            nb.send_type.Free()
            nb.recv_type.Free()
        self.neighbours = []
        self._interposed.clear()

    def __enter__(self) -> Halo3D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _method(method: Method | str) -> Method:
    try:
        return Method(method)
    except ValueError:
        raise ValueError(f"unknown method {method!r}: expected auto or one of "
                         + ", ".join(m.value for m in Method)) from None


def compare(comm: MPI.Comm, grids: Mapping[str, np.ndarray], expected: np.ndarray | None = None,
            reference: str = "expected") -> Verification:
    """Bit-compare each grid with ``expected`` (default: the first grid); collective.

    The result, the same on every rank, lists per grid the ranks where it differs.
    """
    if expected is None:
        reference, expected = next(iter(grids.items()))
    local = {name: not bits_equal(grid, expected) for name, grid in grids.items()}
    flags = comm.allgather(local)
    result = Verification(comm.size, reference, {name: [r for r, f in enumerate(flags) if f[name]] for name in grids})
    if not result.ok:
        log.warning("rank %d: grids differ from %s: %s", comm.rank, reference,
                    {k: v for k, v in result.differ.items() if v})
    return result


def sample_exchanges(comm: MPI.Comm, exchanges: Mapping[str, Callable[[], None]], reps: int,
                     inner: int = 1) -> dict[str, np.ndarray]:
    """``reps`` samples of seconds per call of each exchange, the same on every rank; collective.

    After one warm-up call each, ``reps`` rounds run every exchange ``inner`` times, in an
    order shuffled from round to round, the same on every rank (a drifting machine favours
    none, and none always follows the same other: what ran before changes a time by 5-10%);
    each sample starts after a barrier and counts the slowest rank.
    """
    names = list(exchanges)
    for run in exchanges.values():
        run()
    samples = np.zeros((len(names), reps))
    shuffle = np.random.default_rng(2026)
    for rep in range(reps):
        for i in shuffle.permutation(len(names)):
            run = exchanges[names[i]]
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(inner):
                run()
            samples[i, rep] = (time.perf_counter() - t0) / inner
    comm.Allreduce(MPI.IN_PLACE, samples, op=MPI.MAX)
    return {name: samples[i] for i, name in enumerate(names)}


def time_exchanges(comm: MPI.Comm, exchanges: Mapping[str, Callable[[], None]], reps: int,
                   inner: int = 1) -> dict[str, float]:
    """Median seconds per call of each exchange (see ``sample_exchanges``); collective."""
    return {name: float(np.median(s)) for name, s in sample_exchanges(comm, exchanges, reps, inner).items()}
