#!/usr/bin/env python
"""Run an MPI command across an emulated multi-node cluster on this machine, then tear it down.

Each node is a network namespace with its own hostname, linked to a bridge and throttled with
``tc tbf`` to ``--rate`` in both directions (see ``mpiforge.topology.cluster``). Needs root.

    python scripts/emulated_cluster.py --nodes 2 --rate 1gbit --ranks-per-node 2 --placement roundrobin \\
        -- python -c "from mpi4py import MPI; import socket; print(MPI.COMM_WORLD.rank, socket.gethostname())"
    python scripts/emulated_cluster.py --nodes 2 --rate 1gbit --measure

A leading ``python`` in the command means this Python (the ranks run with it).
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys

import click

from mpiforge.topology.cluster import (
    PLACEMENTS,
    ClusterError,
    EmulatedCluster,
    available,
)


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--nodes", type=click.IntRange(1), default=2, show_default=True, envvar="MPIFORGE_CLUSTER_NODES")
@click.option("--rate", default="1gbit", show_default=True, envvar="MPIFORGE_CLUSTER_RATE",
              help="tc rate of each node's link, each direction (e.g. 1gbit, 200mbit).")
@click.option("--ranks-per-node", type=click.IntRange(1), default=1, show_default=True)
@click.option("--placement", type=click.Choice(PLACEMENTS), default="block", show_default=True)
@click.option("--subnet", default="10.77.0.0/24", show_default=True, envvar="MPIFORGE_CLUSTER_SUBNET")
@click.option("--mtu", type=click.IntRange(576, 65535), default=1500, show_default=True,
              help="MTU of every link (9000: jumbo frames, as HPC Ethernet is usually set up).")
@click.option("--prefix", default="mpf", show_default=True, help="Names of namespaces and links.")
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds before the job is killed.")
@click.option("--measure", is_flag=True, help="Ping-pong 8 MiB between node0 and node1 and report bandwidth.")
@click.option("-v", "--verbose", is_flag=True, help="Log what is built and launched.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def main(nodes, rate, ranks_per_node, placement, subnet, mtu, prefix, timeout, measure, verbose, command) -> None:
    """Build the cluster, run COMMAND under mpiexec across it (or --measure), tear it down."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not command and not measure:
        raise click.UsageError("give a command after `--`, or --measure")
    ok, reason = available()
    if not ok:
        raise click.ClickException(f"cannot emulate a cluster here: {reason}")
    argv = list(command)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    # Ctrl-C (even when started with SIGINT ignored, as in a background job), SIGTERM and SIGHUP
    # unwind through the `with` block, so the cluster is torn down
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    code = 0
    try:
        with EmulatedCluster(nodes=nodes, rate=rate, subnet=subnet, prefix=prefix, mtu=mtu) as cluster:
            if measure:
                if nodes < 2:
                    raise click.UsageError("--measure needs --nodes 2 or more")
                result = cluster.measure(timeout=timeout)
                click.echo(f"ping-pong {result['nbytes'] / 2**20:.0f} MiB {' <-> '.join(result['hosts'])}: "
                           f"{result['bytes_per_s'] / 1e6:.1f} MB/s one way, configured {rate} = "
                           f"{result['rate_bytes_per_s'] / 1e6:.1f} MB/s ({result['ratio']:.0%})")
            if argv:
                proc = cluster.run(ranks_per_node, argv, placement, timeout)
                click.echo(proc.stdout, nl=False)
                click.echo(proc.stderr, nl=False, err=True)
                code = proc.returncode
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    except subprocess.TimeoutExpired as exc:
        raise click.ClickException(f"the job did not finish in {timeout:g} s and was killed: raise --timeout") from exc
    sys.exit(code)


if __name__ == "__main__":
    main()
