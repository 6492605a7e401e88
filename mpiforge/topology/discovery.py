"""Where the ranks of a communicator live: nodes, NUMA domains and GPUs, and how ranks were placed.

    topo = discover(MPI.COMM_WORLD)        # collective
    topo.nodes                             # ((0, 2), (1, 3)): world ranks per node
    topo.placement                         # "roundrobin"
    print(topo.describe())

Nodes come from ``Split_type(COMM_TYPE_SHARED)`` (ranks that share memory), NUMA domains from
sysfs (the first CPU the process may run on), GPUs from ``CUDA_VISIBLE_DEVICES``, NVML, CuPy or
the NVIDIA driver's ``/proc`` entries, all optional. ``MPIFORGE_TOPOLOGY`` replaces the node layout, for
tests and for planning: ``nodes=2`` (block placement), ``nodes=2,placement=roundrobin``, or an
explicit node per rank, ``0,1,0,1``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mpi4py import MPI

__all__ = ["RankPlace", "Topology", "discover", "parse_override", "placement_of"]


@dataclass(frozen=True)
class RankPlace:
    """One rank: its node (numbered by first rank), its rank inside the node, and its neighbourhood."""

    rank: int
    node: int
    local_rank: int
    hostname: str
    numa: int | None = None
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    places: tuple[RankPlace, ...]
    source: str = "discovered"  # or "MPIFORGE_TOPOLOGY=..."

    @property
    def size(self) -> int:
        return len(self.places)

    @property
    def nodes(self) -> tuple[tuple[int, ...], ...]:
        """Ranks of each node, nodes in order of their lowest rank."""
        count = max((p.node for p in self.places), default=-1) + 1
        return tuple(tuple(p.rank for p in self.places if p.node == n) for n in range(count))

    @property
    def placement(self) -> str:
        """"single" (one node), "block", "roundrobin" or "irregular"."""
        return placement_of([p.node for p in self.places])

    def coordinates(self) -> list[tuple[int, ...]]:
        """Every rank's place as (node, local rank), or (node, socket, rank in socket) when every
        node has the same number > 1 of NUMA domains with the same number of ranks each."""
        two = [(p.node, p.local_rank) for p in self.places]
        if any(p.numa is None for p in self.places):
            return two
        groups: dict[tuple[int, int], list[int]] = {}
        for p in self.places:
            groups.setdefault((p.node, p.numa), []).append(p.rank)
        per_node = {n: sorted({s for (m, s) in groups if m == n}) for n, _ in groups}
        if len({len(v) for v in per_node.values()}) != 1 or len(next(iter(per_node.values()))) < 2 \
                or len({len(v) for v in groups.values()}) != 1:
            return two
        coords = [()] * self.size
        for (node, numa), ranks in groups.items():
            for i, r in enumerate(ranks):
                coords[r] = (node, per_node[node].index(numa), i)
        return coords

    def node_of(self, rank: int) -> int:
        return self.places[rank].node

    def describe(self) -> str:
        """The tree as text: nodes, then their ranks with NUMA domain and GPUs."""
        lines = [f"{self.size} ranks on {len(self.nodes)} node(s), placement {self.placement} ({self.source})"]
        for n, ranks in enumerate(self.nodes):
            host = self.places[ranks[0]].hostname
            lines.append(f"node {n} ({host}): {len(ranks)} rank(s)")
            for r in ranks:
                p = self.places[r]
                where = [f"local {p.local_rank}"]
                if p.numa is not None:
                    where.append(f"numa {p.numa}")
                if p.gpus:
                    where.append("gpus " + ",".join(p.gpus))
                lines.append(f"  rank {r}: " + ", ".join(where))
        return "\n".join(lines)


def placement_of(node_of_rank: list[int]) -> str:
    """Name the placement of ranks on nodes (node ids numbered by first appearance)."""
    count = len(set(node_of_rank))
    if count <= 1:
        return "single"
    size = len(node_of_rank)
    if node_of_rank == [r % count for r in range(size)]:
        return "roundrobin"
    if node_of_rank == sorted(node_of_rank):
        return "block"
    return "irregular"


def parse_override(text: str, size: int) -> list[int]:
    """The node of every rank described by ``MPIFORGE_TOPOLOGY`` (see the module docstring)."""
    text = text.strip()
    try:
        if "=" not in text:
            nodes = [int(v) for v in text.split(",")]
            if len(nodes) != size or min(nodes) < 0:
                raise ValueError(f"needs {size} node numbers >= 0, got {len(nodes)}")
            return _renumber(nodes)
        fields = dict(item.split("=", 1) for item in text.split(","))
        count = int(fields.pop("nodes"))
        placement = fields.pop("placement", "block")
        fields.pop("sockets", None)  # read by sockets_override
        if fields or count < 1 or placement not in ("block", "roundrobin"):
            raise ValueError("expected nodes=K[,placement=block|roundrobin][,sockets=S]")
    except (ValueError, KeyError) as exc:
        raise ValueError(f"MPIFORGE_TOPOLOGY={text!r}: {exc}; write e.g. 'nodes=2', "
                         "'nodes=2,placement=roundrobin', 'nodes=2,sockets=2' or '0,1,0,1'") from None
    if placement == "roundrobin":
        return [r % count for r in range(size)]
    per_node = -(-size // count)
    return [r // per_node for r in range(size)]


def sockets_override(text: str) -> int | None:
    """The ``sockets=S`` of ``MPIFORGE_TOPOLOGY``: S NUMA domains per node (ranks in blocks)."""
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "sockets":
            if not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"MPIFORGE_TOPOLOGY={text!r}: sockets needs a count >= 1")
            return int(value)
    return None


def _renumber(nodes: list[int]) -> list[int]:
    order: dict[int, int] = {}
    return [order.setdefault(n, len(order)) for n in nodes]


def _numa_node() -> int | None:
    """NUMA domain of the first CPU this process may run on (None where sysfs does not say)."""
    try:
        cpu = min(os.sched_getaffinity(0))
        for node_dir in Path("/sys/devices/system/node").glob("node[0-9]*"):
            if cpu in _cpu_list((node_dir / "cpulist").read_text()):
                return int(node_dir.name[4:])
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _gpus() -> tuple[str, ...]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else NVML's or CuPy's count (when those
    libraries are installed and a driver answers), else the NVIDIA driver's /proc list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(v for v in visible.split(",") if v and v != "-1")
    for count in (_nvml_count, _cupy_count):
        found = count()
        if found:
            return tuple(str(i) for i in range(found))
    driver = Path("/proc/driver/nvidia/gpus")
    return tuple(sorted(p.name for p in driver.iterdir())) if driver.is_dir() else ()


def _nvml_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # not installed, no driver, no GPU: all mean "none found here"
        return 0


def _cupy_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # as above
        return 0


def discover(comm: MPI.Comm) -> Topology:
    """The topology of ``comm`` (collective): the same value on every rank."""
    override = os.environ.get("MPIFORGE_TOPOLOGY")
    mine = (MPI.Get_processor_name(), _numa_node(), _gpus())
    if override:
        nodes = parse_override(override, comm.size)
        source = f"MPIFORGE_TOPOLOGY={override}"
    else:
        shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        leader = shared.allreduce(comm.rank, op=MPI.MIN)
        shared.Free()
        nodes = _renumber(comm.allgather(leader))
        source = "discovered"
    everyone = comm.allgather(mine)
    sockets = sockets_override(override) if override else None
    counts = [nodes.count(n) for n in nodes]
    seen: dict[int, int] = {}
    places = []
    for rank, (node, (host, numa, gpus)) in enumerate(zip(nodes, everyone)):
        local = seen[node] = seen.get(node, -1) + 1
        if sockets:
            numa = local * sockets // counts[rank]
        places.append(RankPlace(rank, node, local, host, numa, tuple(gpus)))
    return Topology(tuple(places), source)
