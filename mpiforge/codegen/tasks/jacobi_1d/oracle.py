"""mpi4py oracle of jacobi_1d: rank 0 scatters blocks, one halo value exchanged with each neighbour per sweep."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
x = None
n = steps = 0
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    n, steps = int(numbers[0]), int(numbers[1])
    x = np.ascontiguousarray(numbers[2:2 + n])
n, steps = comm.bcast((n, steps), root=0)
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
m, lo = counts[rank], displs[rank]
u = np.zeros(m + 2)  # u[0] and u[m + 1] are the halo cells
comm.Scatterv([x, counts, displs, MPI.DOUBLE] if rank == 0 else None, u[1:m + 1], root=0)
active = min(n, size)  # ranks beyond it hold nothing and take no part in the exchange
left = rank - 1 if m > 0 and rank > 0 else MPI.PROC_NULL
right = rank + 1 if m > 0 and rank + 1 < active else MPI.PROC_NULL
g = np.arange(lo, lo + m)
interior = (g > 0) & (g < n - 1)
for _ in range(steps):
    comm.Sendrecv(u[1:2], left, 0, u[m + 1:m + 2], right, 0)
    comm.Sendrecv(u[m:m + 1], right, 1, u[0:1], left, 1)
    u[1:m + 1] = np.where(interior, (u[:m] + u[1:m + 1] + u[2:]) / 3.0, u[1:m + 1])
out = np.empty(n, dtype=np.float64) if rank == 0 else None
comm.Gatherv(u[1:m + 1], [out, counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], out, fmt="%.17g")
