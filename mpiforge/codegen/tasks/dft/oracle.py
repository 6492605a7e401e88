"""mpi4py oracle of dft: x broadcast, each rank computes a block of frequencies, real and imaginary parts gathered."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
x = None
n = 0
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    n = int(numbers[0])
    x = np.ascontiguousarray(numbers[1:1 + n])
n = comm.bcast(n, root=0)
if rank != 0:
    x = np.empty(n, dtype=np.float64)
comm.Bcast(x, root=0)
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
k = np.arange(displs[rank], displs[rank] + counts[rank])
angle = -2.0 * np.pi * (np.outer(k, np.arange(n)) % n) / n  # j*k reduced mod n keeps the angle small
out = np.empty((2, n), dtype=np.float64) if rank == 0 else None  # Re X, then Im X
for half, part in enumerate((np.cos(angle) @ x, np.sin(angle) @ x)):
    comm.Gatherv(part, [out[half], counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], out.ravel(), fmt="%.17g")
