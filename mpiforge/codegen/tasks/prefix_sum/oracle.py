"""mpi4py oracle of prefix_sum: rank 0 scatters the array, local scans shifted by an exclusive scan of block sums."""
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
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
local = np.empty(counts[rank], dtype=np.float64)
comm.Scatterv([x, counts, displs, MPI.DOUBLE] if rank == 0 else None, local, root=0)
np.cumsum(local, out=local)
offset = comm.exscan(float(local[-1]) if len(local) else 0.0, op=MPI.SUM)
local += offset if rank > 0 else 0.0  # exscan leaves rank 0 undefined
out = np.empty(n, dtype=np.float64) if rank == 0 else None
comm.Gatherv(local, [out, counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], out, fmt="%.17g")
