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

from collections.abc import Generator, Iterable
from typing import Any

from mpi4py import MPI

__all__ = ["Steps", "run", "run_pipelined"]

Steps = Generator[list, None, Any]


def run(steps: Steps) -> Any:
    """Drive ``steps`` to its end (waiting for each step's requests); return its value."""
    try:
        requests = next(steps)
        while True:
            if requests:
                MPI.Request.Waitall(requests)
            requests = steps.send(None)
    except StopIteration as stop:
        return stop.value


def run_pipelined(all_steps: Iterable[Steps], depth: int = 2) -> list:
    """Run several step generators with at most ``depth`` in flight; their values, in order."""
    all_steps = list(all_steps)
    if len(all_steps) == 1 or depth == 1:  # nothing to overlap: plain waits cost less than Waitsome
        return [run(steps) for steps in all_steps]
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
        done = MPI.Request.Waitsome(flat) or []
        finished = set(done)
        for index in {owners[i] for i in done}:
            steps, requests = active[index]
            left = [r for i, r in enumerate(flat) if owners[i] == index and i not in finished]
            if left:
                active[index] = (steps, left)
            else:
                advance(index, steps, False)
    return [results[i] for i in sorted(results)]
