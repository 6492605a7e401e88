"""mpi4py oracle of bfs_levels: edges broadcast, each level's next frontier found over blocks of vertices and allgathered."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
edges = None
n = m = 0
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    n, m = int(numbers[0]), int(numbers[1])
    edges = numbers[2:2 + 2 * m].astype(np.int64)
n, m = comm.bcast((n, m), root=0)
if rank != 0:
    edges = np.empty(2 * m, dtype=np.int64)
comm.Bcast(edges, root=0)
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
lo, hi = displs[rank], displs[rank] + counts[rank]
adj = np.zeros((n, n), dtype=bool)
adj[edges[0::2], edges[1::2]] = adj[edges[1::2], edges[0::2]] = True
np.fill_diagonal(adj, False)  # self loops are no edges
mine = adj[lo:hi]
dist = np.full(n, -1, dtype=np.int64)
dist[0] = 0
reached = np.zeros(n, dtype=np.int32)
for level in range(n):
    new = ((dist[lo:hi] < 0) & mine[:, dist == level].any(axis=1)).astype(np.int32)
    comm.Allgatherv(new, [reached, counts, displs, MPI.INT])
    if not reached.any():
        break
    dist[reached.astype(bool)] = level + 1
if rank == 0:
    np.savetxt(sys.argv[2], dist, fmt="%.17g")
