"""An emulated multi-node cluster on one Linux machine, for topology-aware work without a cluster.

Each "node" is a network namespace with its own hostname (a UTS namespace entered per launched
process), linked by a veth pair to a bridge in the root namespace and throttled with ``tc tbf``
in both directions. MPI jobs reach the nodes through PRRTE's ssh hook: the cluster writes a small
shell script that PRRTE calls like ``ssh <host> <command...>``, and that script runs the command
inside the node's namespaces.

    with EmulatedCluster(nodes=2, rate="200mbit") as cluster:
        cluster.run(2, [sys.executable, "prog.py"], placement="roundrobin", timeout=60)

Needs root, ``ip`` (iproute2 with ``netns``), ``tc`` with the tbf qdisc, ``unshare`` and a kernel
with bridges and veths; :func:`available` says whether this machine has them, and why not.
Everything created (namespaces, veths, bridge, processes inside the namespaces, temp files) is
removed on exit, also after an exception; leftovers of a killed run with the same ``prefix``
are removed before a new cluster is built (so two live clusters need two prefixes and subnets).
"""
from __future__ import annotations

import functools
import glob
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..launch import find_mpiexec

__all__ = ["ClusterError", "EmulatedCluster", "Node", "available", "cleanup_leftovers", "parse_rate"]

log = logging.getLogger(__name__)

PLACEMENTS = ("block", "roundrobin")
_CMD_TIMEOUT = 30  # seconds for one ip/tc command
_RATE_UNITS = {  # tc's units, in bits per second
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
}


class ClusterError(RuntimeError):
    """The emulated cluster could not be built, used or torn down."""


@dataclass(frozen=True)
class Node:
    """One emulated node: its hostname, network namespace, address and root-side veth."""

    index: int
    hostname: str
    namespace: str
    address: str
    veth: str


def parse_rate(rate: str) -> float:
    """A tc rate such as ``"1gbit"``, ``"200mbit"`` or ``"10mbps"`` (bytes) in bits per second."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]+)\s*", str(rate).lower())
    if not match or match.group(2) not in _RATE_UNITS:
        raise ValueError(f"bad rate {rate!r}: use a number and one of {', '.join(_RATE_UNITS)}, e.g. '1gbit'")
    bits = float(match.group(1)) * _RATE_UNITS[match.group(2)]
    if bits <= 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    return bits


def tbf_burst(rate_bps: float) -> int:
    """The token bucket of every node link: 4 ms of the rate, at least 128 KiB, in bytes."""
    return max(128 * 1024, int(rate_bps / 8 * 0.004))


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one system command with a timeout; raise :class:`ClusterError` with its stderr on failure."""
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{shlex.join(cmd)}` failed: {exc}") from exc
    if check and proc.returncode != 0:
        raise ClusterError(f"`{shlex.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@functools.cache
def available() -> tuple[bool, str]:
    """``(True, "")`` if this machine can host an emulated cluster, else ``(False, reason)``.

    Checks root, the tools, and (in a throwaway namespace, removed afterwards) that network
    namespaces, bridges, veths, the tbf qdisc and UTS namespaces really work.
    """
    if not sys.platform.startswith("linux"):
        return False, "an emulated cluster needs Linux network namespaces"
    if os.geteuid() != 0:
        return False, "an emulated cluster needs root (network namespaces, bridges, tc)"
    missing = [tool for tool in ("ip", "tc", "unshare") if shutil.which(tool) is None]
    if missing:
        return False, f"missing {', '.join(missing)}: install iproute2 and util-linux"
    probe = f"mpfprobe{os.getpid()}"
    steps = [
        ("ip", "netns", "add", probe),
        ("ip", "-n", probe, "link", "add", "pb0", "type", "bridge"),
        ("ip", "-n", probe, "link", "add", "pv0", "type", "veth", "peer", "name", "pv1"),
        ("ip", "-n", probe, "link", "set", "pv0", "up"),
        ("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "pv0", "root",
         "tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms"),
        ("ip", "netns", "exec", probe, "unshare", "--uts", "hostname", "probe"),
    ]
    try:
        for step in steps:
            proc = _sh(*step, check=False)
            if proc.returncode != 0:
                return False, f"`{shlex.join(step)}` failed: {proc.stderr.strip() or proc.returncode}"
    except ClusterError as exc:
        return False, str(exc)
    finally:
        _sh("ip", "netns", "del", probe, check=False)
    return True, ""


def _namespace_pids(namespace: str) -> list[int]:
    proc = _sh("ip", "netns", "pids", namespace, check=False)
    return [int(pid) for pid in proc.stdout.split() if pid.isdigit()]


def _kill_namespace_processes(namespace: str, grace: float = 2.0) -> None:
    """SIGTERM every process in ``namespace`` (stray prted daemons, ranks), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _namespace_pids(namespace)
        if not pids:
            return
        log.info("sending %s to %d process(es) left in %s", sig.name, len(pids), namespace)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _namespace_pids(namespace):
            time.sleep(0.05)


def cleanup_leftovers(prefix: str) -> None:
    """Remove namespaces, links and temp dirs named with ``prefix`` (e.g. from a killed run)."""
    names = _sh("ip", "netns", "list", check=False).stdout.split()
    for namespace in (n for n in names if n.startswith(f"{prefix}-node")):
        log.warning("removing leftover namespace %s", namespace)
        _kill_namespace_processes(namespace)
        _sh("ip", "netns", "del", namespace, check=False)
    links = _sh("ip", "-o", "link", "show", check=False).stdout
    for name in re.findall(rf"^\d+:\s+({re.escape(prefix)}-[^:@\s]+)", links, flags=re.MULTILINE):
        log.warning("removing leftover link %s", name)
        _sh("ip", "link", "del", name, check=False)
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{prefix}-cluster-*")):
        shutil.rmtree(path, ignore_errors=True)


_AGENT = """#!/bin/sh
# Written by mpiforge's EmulatedCluster: PRRTE calls this like `ssh <host> <command...>`;
# it runs the command inside that node's network namespace, under the node's own hostname.
while [ "$#" -gt 0 ] && [ "${{1#-}}" != "$1" ]; do shift; done  # ssh-style options: ignored
host="$1"; shift
case "$host" in
{cases}
  *) echo "emulated cluster: unknown host '$host'" >&2; exit 255 ;;
esac
cmd=$(printf '%s ' "$@" | sed 's#/opt/openmpi/bin/prted#{prted}#g')
exec {ip} netns exec "$ns" {unshare} --uts sh -c 'hostname "$1" && eval "$2"' node "$name" "$cmd"
"""

_PINGPONG = """
import json, sys
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
nbytes, repeats = int(sys.argv[1]), int(sys.argv[2])
buf = np.zeros(nbytes, np.uint8)
peer = 1 - comm.rank
times = []
for _ in range(repeats):
    comm.Barrier()
    start = MPI.Wtime()
    if comm.rank == 0:
        comm.Send(buf, peer); comm.Recv(buf, peer)
    else:
        comm.Recv(buf, peer); comm.Send(buf, peer)
    times.append((MPI.Wtime() - start) / 2)
names = comm.gather(MPI.Get_processor_name())
if comm.rank == 0:
    print(json.dumps({"nbytes": nbytes, "one_way_s": times, "hosts": names}))
"""


class EmulatedCluster:
    """K emulated nodes on this machine: a context manager that builds them and tears them down.

    ``rate`` is a tc rate (``"1gbit"``, ``"200mbit"``) applied to each node's link in both
    directions; ``subnet`` gives each node an address (the first hosts) and the bridge one (the
    last host), so mpiexec can run in the root namespace; ``prefix`` names everything created
    (namespaces ``{prefix}-node{i}``, links ``{prefix}-br`` and ``{prefix}-v{i}``).
    """

    def __init__(self, nodes: int = 2, rate: str = "1gbit", subnet: str = "10.77.0.0/24",
                 prefix: str = "mpf", mtu: int = 1500) -> None:
        if nodes < 1:
            raise ValueError(f"need at least one node, got {nodes}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", prefix):
            raise ValueError(f"prefix {prefix!r} must be 1-6 lowercase letters/digits (interface names are short)")
        if not 576 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} out of range: use 1500 (Ethernet) or 9000 (jumbo frames)")
        self.mtu = mtu
        self.rate = rate
        self.rate_bps = parse_rate(rate)
        self.prefix = prefix
        self.network = ipaddress.ip_network(subnet)
        hosts = list(self.network.hosts())
        if len(hosts) < nodes + 1:
            raise ValueError(f"subnet {subnet} has room for {len(hosts)} addresses, need {nodes + 1}")
        self.bridge = f"{prefix}-br"
        self.bridge_address = str(hosts[-1])
        self.nodes = [Node(i, f"node{i}", f"{prefix}-node{i}", str(hosts[i]), f"{prefix}-v{i}")
                      for i in range(nodes)]
        self.tmpdir: Path | None = None
        self.agent: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> EmulatedCluster:  # noqa: PYI034 (typing.Self needs Python 3.11)
        ok, reason = available()
        if not ok:
            raise ClusterError(f"cannot build an emulated cluster here: {reason}")
        cleanup_leftovers(self.prefix)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _build(self) -> None:
        self._check_subnet_free()
        burst = str(tbf_burst(self.rate_bps))
        mtu = ("mtu", str(self.mtu))
        tbf = ("root", "tbf", "rate", self.rate, "burst", burst, "latency", "50ms")
        prefixlen = self.network.prefixlen
        _sh("ip", "link", "add", self.bridge, *mtu, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.bridge_address}/{prefixlen}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for node in self.nodes:
            ns, peer = node.namespace, f"{self.prefix}-p{node.index}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", node.veth, *mtu, "type", "veth", "peer", "name", peer, *mtu)
            _sh("ip", "link", "set", peer, "netns", ns)
            _sh("ip", "-n", ns, "link", "set", peer, "name", "eth0")
            _sh("ip", "-n", ns, "addr", "add", f"{node.address}/{prefixlen}", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "link", "set", node.veth, "master", self.bridge, "up")
            _sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", *tbf)  # node -> bridge
            _sh("tc", "qdisc", "replace", "dev", node.veth, *tbf)  # bridge -> node
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-cluster-"))
        self.agent = self.tmpdir / "agent.sh"
        self.agent.write_text(self._agent_script())
        self.agent.chmod(0o755)
        log.info("emulated cluster up: %d node(s) %s at %s each way, bridge %s %s",
                 len(self.nodes), ", ".join(f"{n.hostname}={n.address}" for n in self.nodes),
                 self.rate, self.bridge, self.bridge_address)

    def _check_subnet_free(self) -> None:
        routes = _sh("ip", "-o", "route", "show", check=False).stdout.splitlines()
        for route in routes:
            dest = route.split()[0]
            if dest == "default":
                continue
            try:
                if ipaddress.ip_network(dest, strict=False).overlaps(self.network):
                    raise ClusterError(
                        f"subnet {self.network} overlaps the existing route '{route.strip()}': "
                        "pass another subnet (and prefix) to EmulatedCluster")
            except ValueError:
                continue

    def _agent_script(self) -> str:
        prted = Path(find_mpiexec()).resolve().parent / "prted"
        cases = "\n".join(f"  {n.address}|{n.hostname}) ns={n.namespace}; name={n.hostname} ;;"
                          for n in self.nodes)
        return _AGENT.format(cases=cases, prted=prted, ip=shutil.which("ip"), unshare=shutil.which("unshare"))

    def close(self) -> None:
        """Remove everything this cluster created; safe to call twice and after a partial build."""
        for node in self.nodes:
            _kill_namespace_processes(node.namespace)
            _sh("ip", "netns", "del", node.namespace, check=False)
            _sh("ip", "link", "del", node.veth, check=False)  # gone with the namespace, normally
        _sh("ip", "link", "del", self.bridge, check=False)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = self.agent = None
        log.info("emulated cluster %s removed", self.prefix)

    # -- launching ---------------------------------------------------------------------------

    def mpiexec_command(self, ranks_per_node: int, argv: list[str], placement: str = "block",
                        extra: list[str] | None = None, nodes: list[Node] | None = None) -> list[str]:
        """An mpiexec command line running ``argv`` on ``ranks_per_node`` ranks of every node
        (or of ``nodes`` only).

        ``placement="block"`` puts consecutive ranks on the same node (0,1 on node0, 2,3 on
        node1); ``"roundrobin"`` deals them out one node at a time (0 on node0, 1 on node1...).
        """
        if self.agent is None:
            raise ClusterError("the cluster is not running: use it inside `with EmulatedCluster(...)`")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if ranks_per_node < 1:
            raise ValueError(f"need at least one rank per node, got {ranks_per_node}")
        nodes = self.nodes if nodes is None else nodes
        hosts = ",".join(f"{n.address}:{ranks_per_node}" for n in nodes)
        subnet = str(self.network)
        return [
            find_mpiexec(), "--allow-run-as-root", "--oversubscribe",
            "-n", str(ranks_per_node * len(nodes)), "--host", hosts,
            "--map-by", "slot" if placement == "block" else "node",
            "--bind-to", "none",  # every "node" believes it owns all the cores
            "--prtemca", "plm_ssh_agent", str(self.agent),
            "--prtemca", "oob_tcp_if_include", subnet,
            "--mca", "pml", "ob1", "--mca", "btl", "self,sm,tcp",
            "--mca", "btl_tcp_if_include", subnet,
            "--mca", "mpi_yield_when_idle", "1",
            *(extra or []), *argv,
        ]

    def run(self, ranks_per_node: int, argv: list[str], placement: str = "block",
            timeout: float = 120, extra: list[str] | None = None,
            nodes: list[Node] | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` across the cluster and return its captured output (text).

        On timeout the whole job is killed (mpiexec, daemons and ranks) and
        :class:`subprocess.TimeoutExpired` is raised.
        """
        cmd = self.mpiexec_command(ranks_per_node, argv, placement, extra, nodes)
        log.info("running %s", shlex.join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # timeout, Ctrl-C, SIGTERM turned into SystemExit
            self._kill_job(proc)
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def _kill_job(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        for node in self.nodes:
            _kill_namespace_processes(node.namespace)

    def measure(self, nbytes: int = 8 << 20, repeats: int = 3, timeout: float = 60) -> dict:
        """Ping-pong ``nbytes`` between node0 and node1; the best one-way bandwidth vs the rate.

        Returns ``{"nbytes", "one_way_s", "hosts", "bytes_per_s", "rate_bytes_per_s", "ratio"}``.
        """
        if len(self.nodes) < 2:
            raise ClusterError("measuring the link needs at least 2 nodes")
        with tempfile.NamedTemporaryFile("w", suffix=".py", dir=self.tmpdir, delete=False) as script:
            script.write(_PINGPONG)
        argv = [sys.executable, script.name, str(nbytes), str(repeats)]
        proc = self.run(1, argv, "roundrobin", timeout, nodes=self.nodes[:2])
        if proc.returncode != 0:
            raise ClusterError(f"ping-pong failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["bytes_per_s"] = nbytes / min(result["one_way_s"])
        result["rate_bytes_per_s"] = self.rate_bps / 8
        result["ratio"] = result["bytes_per_s"] / result["rate_bytes_per_s"]
        return result
