"""Topology discovery: real (one node here) and overridden layouts, at 1-4 ranks; ``mpiforge topo``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mpi4py import MPI

from mpiforge.testing import run_ranks
from mpiforge.topology.discovery import parse_override, placement_of

TIMEOUT = 120


def body_discover(comm: MPI.Comm, expected_nodes: list[list[int]], placement: str) -> None:
    from mpiforge.topology.discovery import discover

    topo = discover(comm)
    assert [list(n) for n in topo.nodes] == expected_nodes, topo.describe()
    assert topo.placement == placement
    mine = topo.places[comm.rank]
    assert mine.rank == comm.rank and mine.hostname == MPI.Get_processor_name()
    assert mine.local_rank == expected_nodes[mine.node].index(comm.rank)
    assert comm.allgather(topo) == [topo] * comm.size, "every rank must see the same topology"


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_one_real_node(nprocs: int) -> None:
    run_ranks(body_discover, nprocs, TIMEOUT, args=([list(range(nprocs))], "single"),
              env={"MPIFORGE_TOPOLOGY": ""})


@pytest.mark.parametrize("override,nodes,placement", [
    ("nodes=2", [[0, 1], [2, 3]], "block"),
    ("nodes=2,placement=roundrobin", [[0, 2], [1, 3]], "roundrobin"),
    ("1,1,0,0", [[0, 1], [2, 3]], "block"),
    ("0,1,1,0", [[0, 3], [1, 2]], "irregular"),
])
def test_overridden_layouts(override: str, nodes: list[list[int]], placement: str) -> None:
    run_ranks(body_discover, 4, TIMEOUT, args=(nodes, placement), env={"MPIFORGE_TOPOLOGY": override})


def test_override_parsing() -> None:
    assert parse_override("nodes=3", 5) == [0, 0, 1, 1, 2]
    assert parse_override("nodes=3,placement=roundrobin", 5) == [0, 1, 2, 0, 1]
    for bad in ("nodes=0", "0,1", "nodes=2,placement=zigzag", "racks=2", "a,b,c"):
        with pytest.raises(ValueError, match="MPIFORGE_TOPOLOGY"):
            parse_override(bad, 3)
    assert placement_of([0, 0, 0]) == "single" and placement_of([0, 1, 0, 1]) == "roundrobin"


def test_topo_command_prints_the_tree() -> None:
    env = {**os.environ, "MPIFORGE_TOPOLOGY": "nodes=2,placement=roundrobin"}
    proc = subprocess.run([sys.executable, "-m", "mpiforge", "topo", "--ranks", "4"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 ranks on 2 node(s), placement roundrobin" in proc.stdout
    assert "node 1" in proc.stdout and "rank 3: local 1" in proc.stdout
