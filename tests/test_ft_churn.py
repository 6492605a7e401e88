"""Churn stress test of the fault-tolerant all-reduce (like PCCL's): peers SIGKILLed and started
at random while the others keep all-reducing and synchronising a shared state.

Every round of every peer is checked: the exact sum over that round's participants (integer-valued
data), bit-identical results and shared state on every participant of an operation, the same
revision for every participant (each peer also checks revision + 1 itself), the input unchanged
after an abort. A watchdog fails the test when no operation completes for ``STALL`` seconds.

Runs ``MPIFORGE_FT_CHURN_SECONDS`` seconds of chaos (default 30); set it higher for a soak run.
"""
from __future__ import annotations

import collections
import os
import random
import time

import pytest

from mpiforge.comms.ft.harness import Cluster

CHURN_SECONDS = float(os.environ.get("MPIFORGE_FT_CHURN_SECONDS", "30"))
START, MIN_ALIVE, MAX_ALIVE = 6, 2, 10
STALL = 20.0  # watchdog: seconds without a completed operation anywhere


def _last_ok(workers) -> float:
    return max((e["done"] for w in workers for e in w.events_of("round")), default=0.0)


@pytest.mark.timeout(CHURN_SECONDS + 120)
def test_churn() -> None:
    rng = random.Random(int(os.environ.get("MPIFORGE_FT_CHURN_SEED", "5")))
    with Cluster(heartbeat_timeout=2.0) as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"w{i}", "loop", "--count", "20000", "--timeout", "20") for i in range(START)]
        cluster.wait_for(lambda: sum(len(w.events_of("round")) > 0 for w in workers) >= 2, 60, "first rounds")
        started = time.monotonic()
        end, kills, spawns, serial = started + CHURN_SECONDS, 0, 0, START
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.3, 1.2))
            alive = [w for w in workers if w.alive]
            if len(alive) > MIN_ALIVE and (len(alive) >= MAX_ALIVE or rng.random() < 0.5):
                cluster.kill(rng.choice(alive))
                kills += 1
            else:
                workers.append(cluster.spawn(f"w{serial}", "loop", "--count", "20000", "--timeout", "20"))
                serial, spawns = serial + 1, spawns + 1
            last = _last_ok(workers)
            stalled = time.monotonic() - max(last, started)
            assert stalled < STALL, f"no operation completed for {stalled:.1f} s; stderr of a survivor:\n" + \
                next((w.stderr() for w in workers if w.alive), "")
        cluster.wait_for(lambda: _last_ok(workers) > end, STALL, "an operation after the chaos")
        for w in workers:
            w.kill()
        master_alive = cluster.master is not None and cluster.master.alive
        time.sleep(0.2)

    rounds = [(w.name, e) for w in workers for e in w.events_of("round")]
    aborts = [(w.name, e) for w in workers for e in w.events_of("abort")]
    errors = [(w.name, e) for w in workers for e in w.events if e["event"] in ("error", "fatal")]
    by_op: dict[int, list[dict]] = collections.defaultdict(list)
    for _, e in rounds:
        by_op[e["op_id"]].append(e)
    wrong = [(n, e) for n, e in rounds if not e["correct"] or not e["intact"]]
    split = {op: {(e["digest"], e["state"], e["revision"], tuple(e["peers"])) for e in es}
             for op, es in by_op.items()}
    split = {op: v for op, v in split.items() if len(v) > 1}
    print(f"\nchurn {CHURN_SECONDS:.0f} s: {kills} kills, {spawns} spawns, {len(by_op)} operations "
          f"({len(rounds)} peer-rounds), {len(aborts)} aborts seen by peers, max world "
          f"{max(e['world'] for _, e in rounds)}")
    assert master_alive, "the master died"
    assert not errors, f"peers reported errors: {errors[:5]}"
    assert not wrong, f"wrong results or touched inputs: {wrong[:5]}"
    assert not split, f"participants of one operation disagree: {list(split.items())[:3]}"
    assert all(e["intact"] for _, e in aborts), [e for _, e in aborts if not e["intact"]][:5]
    assert len(by_op) >= 20, f"only {len(by_op)} operations completed"
    assert kills >= 3 and spawns >= 3
