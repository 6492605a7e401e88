"""The emulated multi-node cluster (``mpiforge.topology.cluster``): placement, hostnames, throttle, cleanup.

Needs root and network namespaces; skipped with the reason from ``available()`` elsewhere.
One 2-node cluster at a low rate serves the module; every launch has a timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpiforge.topology.cluster import EmulatedCluster, available, parse_rate

OK, REASON = available()
PREFIX = "mpft"  # not the default, so a developer's own cluster is left alone
SUBNET = "10.78.0.0/24"
RATE = "200mbit"
TIMEOUT = 60
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "emulated_cluster.py"
BODIES = Path(__file__).resolve().parent / "test_topology_collectives.py"  # body_sections, section_cluster
WHERE = ("import json, socket; from mpi4py import MPI; "
         "print(json.dumps([MPI.COMM_WORLD.rank, socket.gethostname(), MPI.Get_processor_name()]))")

needs_cluster = pytest.mark.skipif(not OK, reason=f"no emulated cluster here: {REASON}")
pytestmark = pytest.mark.mpi


def leftovers(prefix: str) -> list[str]:
    """Names of namespaces and links that still carry ``prefix``."""
    netns = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10).stdout
    links = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True, text=True, timeout=10).stdout
    return [w for w in (netns + links).replace(":", " ").replace("@", " ").split() if w.startswith(f"{prefix}-")]


@pytest.fixture(scope="module")
def cluster():
    with EmulatedCluster(nodes=2, rate=RATE, subnet=SUBNET, prefix=PREFIX) as c:
        yield c
    assert leftovers(PREFIX) == []


def test_parse_rate():
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("200mbit") == 200e6
    assert parse_rate("10mbps") == 80e6
    with pytest.raises(ValueError, match="bad rate"):
        parse_rate("fast")


@needs_cluster
@pytest.mark.parametrize("placement, expected", [
    ("block", ["node0", "node0", "node1", "node1"]),
    ("roundrobin", ["node0", "node1", "node0", "node1"]),
])
def test_ranks_land_on_expected_nodes(cluster, placement, expected):
    proc = cluster.run(2, [sys.executable, "-c", WHERE], placement=placement, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    rows = sorted(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
    assert [rank for rank, _, _ in rows] == [0, 1, 2, 3]
    assert [host for _, host, _ in rows] == expected
    assert [name for _, _, name in rows] == expected


@needs_cluster
def test_cross_node_transfer_is_throttled(cluster):
    nbytes = 4 << 20
    result = cluster.measure(nbytes=nbytes, repeats=2, timeout=TIMEOUT)
    assert result["hosts"] == ["node0", "node1"]
    floor = nbytes / (parse_rate(RATE) / 8)  # seconds the configured rate allows
    # tbf lets one burst (128 KiB, 3% of the message) through at full speed
    assert min(result["one_way_s"]) >= 0.9 * floor, result
    assert result["ratio"] > 0.5, f"far below the configured rate: {result}"


@needs_cluster
def test_cleanup_on_exception_and_of_leftovers():
    prefix, subnet = "mpfx", "10.79.0.0/24"
    with pytest.raises(RuntimeError, match="boom"), \
            EmulatedCluster(nodes=2, rate="1gbit", subnet=subnet, prefix=prefix) as c:
        assert c.agent is not None and c.agent.exists()
        tmpdir = c.tmpdir
        raise RuntimeError("boom")
    assert leftovers(prefix) == [] and not tmpdir.exists()
    # leftovers of a killed run: a namespace and a bridge with the prefix, removed by the next cluster
    subprocess.run(["ip", "netns", "add", f"{prefix}-node7"], check=True, timeout=10)
    subprocess.run(["ip", "link", "add", f"{prefix}-br", "type", "bridge"], check=True, timeout=10)
    with EmulatedCluster(nodes=1, rate="1gbit", subnet=subnet, prefix=prefix):
        assert f"{prefix}-node7" not in leftovers(prefix)
    assert leftovers(prefix) == []


@needs_cluster
def test_cli_runs_command_and_cleans_up():
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent.parent)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--nodes", "2", "--rate", "1gbit", "--ranks-per-node", "1",
         "--prefix", "mpfc", "--subnet", "10.80.0.0/24", "--", "python", "-c", WHERE],
        check=False, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    hosts = sorted(json.loads(line)[1] for line in proc.stdout.splitlines() if line.startswith("["))
    assert hosts == ["node0", "node1"]
    assert leftovers("mpfc") == []


@needs_cluster
def test_topology_collectives_match_mpi_across_nodes(cluster, tmp_path, monkeypatch):
    """TopologyCollective on 2 nodes x 2 ranks (round-robin), nodes discovered, not overridden:
    allreduce (auto, forced hierarchical, int8), reduce_scatter, allgather, bcast and reduce
    against MPI's collectives (``section_cluster`` in test_topology_collectives.py)."""
    for name in ("MPIFORGE_TOPOLOGY", "MPIFORGE_ALGO", "MPIFORGE_QUANTIZE"):
        monkeypatch.delenv(name, raising=False)
    profile = f"MPIFORGE_TOPO_PROFILE={tmp_path / 'no-profile.json'}"  # the default figures
    monkeypatch.setenv("MPIFORGE_TOPO_PROFILE", str(tmp_path / "no-profile.json"))
    argv = [sys.executable, "-m", "mpiforge.testing", str(BODIES), "body_sections", str(tmp_path),
            json.dumps([str(tmp_path), [["cluster", None, "cluster"]]])]
    proc = cluster.run(2, argv, placement="roundrobin", timeout=TIMEOUT, extra=["-x", profile])
    outcomes = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("[0-9]*.json"))]
    crashed = [o["error"] for o in outcomes if not o["ok"]]
    assert proc.returncode == 0 and len(outcomes) == 4 and not crashed, \
        f"exit {proc.returncode}, {len(outcomes)} ranks reported\n" + "\n".join(crashed) + proc.stderr[-3000:]
    records = [json.loads((tmp_path / f"sections-{rank}.json").read_text()) for rank in range(4)]
    failures = [f"rank {rank}: {f}" for rank, r in enumerate(records) for f in r["cluster"]["failures"]]
    assert all(r["cluster"]["checks"] > 0 for r in records)
    assert not failures, "\n".join(failures[:40])
