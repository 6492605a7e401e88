"""Fault-tolerant all-reduce between peer processes: every op and dtype, odd sizes, quantized
chunks, concurrent tags, in place, all-gather, broadcast, the Collective interface and ring
optimisation; results exact and bit-identical on every peer."""
from __future__ import annotations

import collections

import pytest

from mpiforge.comms.ft.harness import Cluster

_BOUND = {"int8": 127, "fp8": 16, "int4": 7}  # per quantization: |error| <= block absmax / this


def run_suite(world: int, extra: tuple[str, ...], options: tuple[str, ...]) -> dict[str, list[dict]]:
    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"p{i}", "suite", "--world", str(world), *extra, options=options) for i in range(world)]
        for w in workers:
            w.wait_event(lambda e: e["event"] in ("done", "fatal"), 150)
        fatal = [e for w in workers for e in w.events_of("fatal")]
        assert not fatal, f"{fatal} {workers[0].stderr()}"
        events: dict[str, list[dict]] = collections.defaultdict(list)
        for w in workers:
            for e in w.events:
                if e["event"] in ("case", "quant"):
                    events[e["case"]].append(e)
    return events


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world, extra, options", [
    (2, ("--collective",), ()),
    (3, (), ("--segment-bytes", "65536")),  # many pipelined segments per chunk
    (4, ("--large", "100003"), ("--lanes", "3", "--segment-bytes", "20000")),  # odd segment and lane counts
])
def test_allreduce_suite(world: int, extra: tuple[str, ...], options: tuple[str, ...]) -> None:
    events = run_suite(world, extra, options)
    assert len(events) >= 80
    for case, es in events.items():
        assert len(es) == world and all(e["world"] == world for e in es), case
        assert len({e["digest"] for e in es}) == 1, f"{case}: results differ between peers"
        if es[0]["event"] == "case":
            assert all(e["ok"] for e in es), f"{case}: wrong result {es}"
        else:  # quantized: each of the n - 1 partial sums and the final chunk is quantized once
            e = es[0]
            q = e["case"].split("/")[1]
            per_step = world * e["bound"] / _BOUND[q]  # partial sums stay below world * max|x|
            assert e["max_err"] <= world * per_step, e
            assert e["rms_rel"] < {"int8": 0.02, "fp8": 0.08, "int4": 0.3}[q], e
            assert e["bytes_sent"] < e["exact_bytes"] * (0.5 if q == "int4" else 0.7), e
    assert {e["ring"][0] for e in events["after-optimize"]} and all(e["ok"] for e in events["after-optimize"])
