"""Shared-state synchronisation between peer processes: hash parity, revision + 1, a drifted peer
fetches the popular state, a skipped revision is refused, receive_only rejoins, send_only refuses."""
from __future__ import annotations

import pytest

from mpiforge.comms.ft.harness import Cluster


@pytest.mark.timeout(120)
def test_shared_state_sync() -> None:
    world = 3
    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"s{i}", "state", "--world", str(world)) for i in range(world)]
        for w in workers:
            w.wait_event(lambda e: e["event"] in ("done", "fatal"), 90)
        events = [e for w in workers for e in w.events_of("sync")]
        assert not [e for w in workers for e in w.events_of("fatal")], workers[0].stderr()
    step = {k: [e for e in events if e["step"] == k] for k in range(1, 6)}
    odd = {k: next(e for e in es if e["odd"]) for k, es in step.items()}
    even = {k: [e for e in es if not e["odd"]] for k, es in step.items()}
    assert all(len(es) == world for es in step.values())

    def parity(es: list[dict]) -> bool:
        return len({e["state"] for e in es}) == 1

    assert parity(step[1]) and all(e["revision"] == 1 and e["fetched"] == [] for e in step[1])
    assert parity(step[2]) and odd[2]["fetched"] == ["w"] and all(e["fetched"] == [] for e in even[2])
    assert all(e["revision"] == 2 for e in step[2])
    assert odd[3]["error"] == "RevisionError" and "last one + 1" in odd[3]["message"]
    assert all(e["revision"] == 3 for e in even[3]) and parity(even[3])
    assert parity(step[4]) and odd[4]["revision"] == 4 and odd[4]["fetched"] == ["m"]
    assert "error" in odd[5] and "send_only" in odd[5]["message"]
    assert all(e["revision"] == 5 for e in even[5]) and parity(even[5])
