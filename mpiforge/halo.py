"""Halo exchange on a periodic 3-D Cartesian grid, two ways: MPI derived datatypes, or the
mpiforge engine (pack each face into a contiguous buffer, send the bytes, unpack).

    cart = cartesian(MPI.COMM_WORLD)             # MPI.Compute_dims, periodic in x, y, z
    ex = HaloExchange(cart, n=48, h=2)           # 6 faces: send slabs + receive halos
    a, b = ex.new_grid(), ex.new_grid()
    ex.exchange_mpi(a)                           # Sendrecv([grid, 1, subarray])
    ex.exchange_packed(b)                        # pack -> Sendrecv(MPI.BYTE) -> unpack
    result = ex.verify(a, b)                     # collective; result.ok is the same on every rank
    ex.free()

The local grid is ``(n + 2h)**3`` float64 in C order, so axis 0 is x (slowest) and axis 2
is z (contiguous). Faces cover the interior cross-section only (no edges or corners); a
rank's interior value at flat index ``i`` is ``rank * (n + 2h)**3 + i`` and the rest starts
as ``SENTINEL``, so after an exchange every byte of the grid has one known value.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .datatypes import pack, unpack
from .datatypes.compare import compare_with_mpi

__all__ = [
    "SENTINEL", "Face", "HaloExchange", "Verification", "ExchangeTimes", "FaceThroughput", "cartesian",
]

log = logging.getLogger(__name__)

AXES = "xyz"
SENTINEL = -1.0  # value of halo cells before any exchange


def cartesian(comm: MPI.Comm, ndims: int = 3) -> MPI.Cartcomm:
    """A periodic Cartesian communicator over all of ``comm`` (dims from MPI.Compute_dims)."""
    dims = MPI.Compute_dims(comm.size, ndims)
    return comm.Create_cart(dims, periods=[True] * ndims, reorder=False)


@dataclass
class Face:
    """One side of the local box: the interior slab sent that way and the halo filled from there."""

    axis: int
    side: int  # -1 (low) or +1 (high)
    neighbour: int  # rank on that side
    send_type: MPI.Datatype  # interior slab of width h next to this side
    recv_type: MPI.Datatype  # halo of width h on this side
    send_buf: np.ndarray  # engine path: packed bytes of send_type
    recv_buf: np.ndarray  # engine path: bytes that arrive for recv_type

    @property
    def name(self) -> str:
        return AXES[self.axis] + ("-" if self.side < 0 else "+")

    @property
    def nbytes(self) -> int:
        return self.send_type.size


@dataclass
class Verification:
    """Outcome of ``HaloExchange.verify``; every list holds the ranks where that check failed."""

    nranks: int
    differ: list[int] = field(default_factory=list)  # grid (a) and grid (b) not bit-identical
    wrong: list[int] = field(default_factory=list)  # grid (a) not the expected grid
    pack_mismatch: list[int] = field(default_factory=list)  # engine bytes != MPI_Pack bytes

    @property
    def ok(self) -> bool:
        return not (self.differ or self.wrong or self.pack_mismatch)


@dataclass
class ExchangeTimes:
    """Median seconds per full 6-face exchange (slowest rank's median), and the engine's phases."""

    mpi: float
    packed: float
    pack: float
    comm: float
    unpack: float


@dataclass
class FaceThroughput:
    """Median seconds to pack/unpack one face, engine vs MPI_Pack/MPI_Unpack."""

    face: str
    nbytes: int
    engine_pack: float
    mpi_pack: float
    engine_unpack: float
    mpi_unpack: float


class HaloExchange:
    """The 6 faces of a rank's box on a 3-D periodic Cartesian communicator, and exchanges over them."""

    def __init__(self, cart: MPI.Cartcomm, n: int, h: int) -> None:
        if not isinstance(cart, MPI.Cartcomm) or cart.Get_dim() != 3:
            raise ValueError("HaloExchange needs a 3-D Cartesian communicator (see cartesian())")
        if n < 1 or not 1 <= h <= n:
            raise ValueError(f"need n >= 1 and 1 <= halo <= n, got n={n}, halo={h}")
        self.comm, self.n, self.h = cart, n, h
        self.dims = tuple(cart.Get_topo()[0])
        self.shape = (n + 2 * h,) * 3
        self.faces: list[Face] = []
        for axis in range(3):
            low, high = cart.Shift(axis, 1)
            for side, neighbour in ((-1, low), (+1, high)):
                send_type = self._box(axis, h if side < 0 else n)
                recv_type = self._box(axis, 0 if side < 0 else n + h)
                nbytes = send_type.size
                self.faces.append(Face(axis, side, neighbour, send_type, recv_type,
                                       np.empty(nbytes, np.uint8), np.empty(nbytes, np.uint8)))
        log.debug("rank %d: dims %s, faces %s", cart.rank, self.dims,
                  [(f.name, f.neighbour) for f in self.faces])

    def _box(self, axis: int, start: int) -> MPI.Datatype:
        """Subarray of width h at ``start`` along ``axis``, the interior cross-section across it."""
        subsizes, starts = [self.n] * 3, [self.h] * 3
        subsizes[axis], starts[axis] = self.h, start
        return MPI.DOUBLE.Create_subarray(self.shape, subsizes, starts, order=MPI.ORDER_C).Commit()

    def _transfers(self):
        """(send face, receive face, tag): data travelling towards ``send.side`` along its axis
        lands in the neighbour's halo on the opposite side."""
        for axis in range(3):
            low, high = self.faces[2 * axis], self.faces[2 * axis + 1]
            yield high, low, 2 * axis + 1
            yield low, high, 2 * axis

    # -- grids --

    def new_grid(self, rank: int | None = None) -> np.ndarray:
        """A grid filled as ``rank`` (default: this rank) fills it before any exchange."""
        rank = self.comm.rank if rank is None else rank
        size = int(np.prod(self.shape))
        grid = np.arange(rank * size, (rank + 1) * size, dtype=np.float64).reshape(self.shape)
        interior = self._interior()
        halo = np.ones(self.shape, dtype=bool)
        halo[interior] = False
        grid[halo] = SENTINEL
        return grid

    def _interior(self) -> tuple[slice, ...]:
        return (slice(self.h, self.h + self.n),) * 3

    def expected_grid(self) -> np.ndarray:
        """This rank's grid after one exchange: each face halo holds the neighbour's slab."""
        grid = self.new_grid()
        n = self.n
        for face in self.faces:
            other = self.new_grid(face.neighbour)
            dst, src = list(self._interior()), list(self._interior())
            lo = 0 if face.side < 0 else n + self.h
            dst[face.axis] = slice(lo, lo + self.h)
            src[face.axis] = slice(lo - face.side * n, lo - face.side * n + self.h)
            grid[tuple(dst)] = other[tuple(src)]
        return grid

    # -- the two exchanges --

    def exchange_mpi(self, grid: np.ndarray) -> None:
        """Fill ``grid``'s halos with MPI derived-datatype Sendrecv, one per face."""
        for send, recv, tag in self._transfers():
            self.comm.Sendrecv([grid, 1, send.send_type], send.neighbour, tag,
                               [grid, 1, recv.recv_type], recv.neighbour, tag)

    def exchange_packed(self, grid: np.ndarray) -> tuple[float, float, float]:
        """Fill ``grid``'s halos through the engine; returns seconds spent (pack, comm, unpack)."""
        t0 = time.perf_counter()
        for face in self.faces:
            pack(grid, 1, face.send_type, face.send_buf)
        t1 = time.perf_counter()
        for send, recv, tag in self._transfers():
            self.comm.Sendrecv([send.send_buf, MPI.BYTE], send.neighbour, tag,
                               [recv.recv_buf, MPI.BYTE], recv.neighbour, tag)
        t2 = time.perf_counter()
        for face in self.faces:
            unpack(face.recv_buf, 0, grid, 1, face.recv_type)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    # -- checks and timings --

    def verify(self, grid_a: np.ndarray, grid_b: np.ndarray) -> Verification:
        """Compare the MPI-exchanged ``grid_a`` with the engine-exchanged ``grid_b``; collective.

        Checks on every rank that the two grids are bit-identical, that ``grid_a`` holds exactly
        the expected values (neighbours' slabs in the face halos, nothing else changed), and that
        the engine packs each face byte for byte like MPI_Pack. Raises ValueError (before any
        communication) if a grid has the wrong shape or dtype.
        """
        for name, grid in (("grid_a", grid_a), ("grid_b", grid_b)):
            if not isinstance(grid, np.ndarray) or grid.shape != self.shape or grid.dtype != np.float64:
                what = f"{getattr(grid, 'shape', None)} {getattr(grid, 'dtype', type(grid).__name__)}"
                raise ValueError(f"{name} must be a float64 array of shape {self.shape}, got {what}")
        bits = lambda g: np.ascontiguousarray(g).view(np.uint64)  # noqa: E731 - NaN-safe, -0.0-exact
        differ = not np.array_equal(bits(grid_a), bits(grid_b))
        wrong = not np.array_equal(bits(grid_a), bits(self.expected_grid()))
        pack_mismatch = False
        for face in self.faces:
            reference = np.empty_like(face.send_buf)
            for dt in (face.send_type, face.recv_type):
                pack(grid_a, 1, dt, face.send_buf)
                dt.Pack(grid_a, reference, 0, MPI.COMM_SELF)
                pack_mismatch |= not np.array_equal(face.send_buf, reference)
        flags = self.comm.allgather((differ, wrong, pack_mismatch))
        result = Verification(self.comm.size, *([r for r, f in enumerate(flags) if f[i]] for i in range(3)))
        if not result.ok:
            log.warning("rank %d: halo verification failed: %s", self.comm.rank, result)
        return result

    def time_exchanges(self, grid_a: np.ndarray, grid_b: np.ndarray, iters: int) -> ExchangeTimes:
        """Alternate the two exchanges ``iters`` times after one warm-up each; collective.

        Each sample starts after a barrier; the result is the slowest rank's median.
        """
        self.exchange_mpi(grid_a)
        self.exchange_packed(grid_b)
        mpi, packed, phases = [], [], []
        for _ in range(iters):
            self.comm.Barrier()
            t0 = time.perf_counter()
            self.exchange_mpi(grid_a)
            mpi.append(time.perf_counter() - t0)
            self.comm.Barrier()
            t0 = time.perf_counter()
            phases.append(self.exchange_packed(grid_b))
            packed.append(time.perf_counter() - t0)
        local = [statistics.median(mpi), statistics.median(packed)]
        local += [statistics.median(p[i] for p in phases) for i in range(3)]
        slowest = np.empty(len(local))
        self.comm.Allreduce(np.array(local), slowest, op=MPI.MAX)
        return ExchangeTimes(*map(float, slowest))

    def face_throughput(self, grid: np.ndarray, samples: int, root: int = 0) -> list[FaceThroughput]:
        """Time the engine and MPI_Pack/MPI_Unpack on ``root``'s faces; collective, result on root.

        The other ranks wait in a sleeping Ibarrier so that they leave the cores to ``root``.
        Unpack is timed with the send slab's type (same shape as the halo's) on a copy of the grid.
        """
        comm = self.comm
        if comm.rank != root:
            request = comm.Ibarrier()
            while not request.Test():
                time.sleep(0.001)
            return []
        results = []
        for face in self.faces:
            c = compare_with_mpi(face.send_type, grid, samples)
            results.append(FaceThroughput(face.name, face.nbytes, c.engine_pack, c.mpi_pack,
                                          c.engine_unpack, c.mpi_unpack))
        comm.Ibarrier().Wait()
        return results

    def free(self) -> None:
        """Free the 12 datatypes (the engine forgets their cached packers)."""
        for face in self.faces:
            face.send_type.Free()
            face.recv_type.Free()
        self.faces = []

    def __enter__(self) -> HaloExchange:
        return self

    def __exit__(self, *exc) -> None:
        self.free()
