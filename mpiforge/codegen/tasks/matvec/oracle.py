"""mpi4py oracle of matvec: rank 0 scatters row blocks of A and broadcasts x, row blocks of y gathered."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
a = None
m = n = 0
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    m, n = int(numbers[0]), int(numbers[1])
    a = np.ascontiguousarray(numbers[2:2 + m * n])
    x = np.ascontiguousarray(numbers[2 + m * n:2 + m * n + n])
m, n = comm.bcast((m, n), root=0)
if rank != 0:
    x = np.empty(n, dtype=np.float64)
comm.Bcast(x, root=0)
counts = [m // size + (1 if r < m % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
rows = np.empty((counts[rank], n), dtype=np.float64)
comm.Scatterv([a, [c * n for c in counts], [d * n for d in displs], MPI.DOUBLE] if rank == 0 else None, rows, root=0)
y = rows @ x
out = np.empty(m, dtype=np.float64) if rank == 0 else None
comm.Gatherv(y, [out, counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], out, fmt="%.17g")
