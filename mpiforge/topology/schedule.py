"""Run collective algorithms written as generators of nonblocking steps, one or several at once.

An algorithm is a generator that posts nonblocking sends and receives, yields the list of their
requests, and continues (combining what arrived) once all of them have completed; its return
value is the algorithm's result. ``run`` drives one to the end; ``run_pipelined`` keeps up to
``depth`` of them in flight (the segments of a pipelined collective) and resumes whichever is
ready first, so one segment's reduction overlaps another segment's transfer on a slow link.

    owned = run(ring_reduce_scatter_steps(comm, flat, "sum", order))
    run_pipelined([hierarchical_steps(segment, tag=i) for i, segment in enumerate(parts)], depth=3)
"""
from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterable
from typing import Any

from mpi4py import MPI

__all__ = ["Steps", "run", "run_pipelined"]

Steps = Generator[list, None, Any]


SPIN_S = float(os.environ.get("MPIFORGE_SPIN_US", "50")) * 1e-6
NAP_MAX_S = 1e-3


def wait_some(requests: list) -> list[int]:
    """Indices of completed ``requests`` (at least one): spin for ``SPIN_S``, then test between
    naps that grow to 1 ms, so that a rank waiting on a slow link leaves the CPU to the ranks
    and the network stack that have work (MPI's own wait spins, which on an oversubscribed node
    starves them). ``MPIFORGE_SPIN_US=inf`` always spins."""
    start = time.perf_counter()
    nap = 20e-6
    while True:
        done = MPI.Request.Testsome(requests)
        if done:
            return done
        if time.perf_counter() - start > SPIN_S:
            time.sleep(nap)
            nap = min(2 * nap, NAP_MAX_S)


def run(steps: Steps) -> Any:
    """Drive ``steps`` to its end (waiting for each step's requests); return its value."""
    try:
        requests = next(steps)
        while True:
            while requests:
                done = set(wait_some(requests))
                requests = [r for i, r in enumerate(requests) if i not in done]
            requests = steps.send(None)
    except StopIteration as stop:
        return stop.value


def run_pipelined(all_steps: Iterable[Steps], depth: int = 2) -> list:
    """Run several step generators with at most ``depth`` in flight; their values, in order."""
    queue = enumerate(all_steps)
    results: dict[int, Any] = {}
    active: dict[int, tuple[Steps, list]] = {}  # index -> (generator, requests not yet complete)

    def advance(index: int, steps: Steps, first: bool) -> None:
        try:
            while True:
                requests = next(steps) if first else steps.send(None)
                first = False
                if requests:
                    active[index] = (steps, list(requests))
                    return
        except StopIteration as stop:
            results[index] = stop.value
            active.pop(index, None)

    exhausted = False
    while True:
        while not exhausted and len(active) < depth:
            item = next(queue, None)
            if item is None:
                exhausted = True
            else:
                advance(item[0], item[1], True)
        if not active:
            break
        owners, flat = [], []
        for index, (_, requests) in active.items():
            owners += [index] * len(requests)
            flat += requests
        done = wait_some(flat)
        finished = set(done)
        for index in {owners[i] for i in done}:
            steps, requests = active[index]
            left = [r for i, r in enumerate(flat) if owners[i] == index and i not in finished]
            if left:
                active[index] = (steps, left)
            else:
                advance(index, steps, False)
    return [results[i] for i in sorted(results)]
