"""Failures and membership changes between peer processes: SIGKILL and SIGSTOP mid all-reduce,
joiners between and during operations, a wrong secret, the master's death."""
from __future__ import annotations

import signal
import time

import pytest

from mpiforge.comms.ft.auth import authenticate_client
from mpiforge.comms.ft.errors import AuthError, MasterLost
from mpiforge.comms.ft.harness import Cluster, Process
from mpiforge.comms.ft.peer import Peer
from mpiforge.comms.ft.wire import open_connection

DETECT_S, RETRY_S = 2.0, 3.0  # targets: a survivor's exception, and its first successful retry, after the kill
BIG = "2000000"  # 8 MiB of float32: an all-reduce lasts long enough to be killed in the middle


def _kill_mid_op(cluster: Cluster, victim: Process, sig: int = signal.SIGKILL) -> float:
    """Kill ``victim`` a few ms after it starts its next all-reduce."""
    seen = len(victim.events_of("round_start"))
    victim.wait_event(lambda e: e["event"] == "round_start" and len(victim.events_of("round_start")) > seen, 20)
    time.sleep(0.005)
    return cluster.kill(victim, sig)


def _recovery(survivor: Process, t_kill: float) -> tuple[dict, dict]:
    abort = survivor.wait_event(lambda e: e["event"] == "abort" and e["t"] > t_kill, 15)
    ok = survivor.wait_event(lambda e: e["event"] == "round" and e["t"] > t_kill, 15)
    return abort, ok


@pytest.mark.timeout(120)
def test_sigkill_mid_allreduce_twice() -> None:
    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"k{i}", "loop", "--count", BIG, "--world", "4") for i in range(4)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "two rounds each")
        for victim, survivors in ((workers[1], [workers[0], workers[2], workers[3]]), (workers[3], workers[::2])):
            t_kill = _kill_mid_op(cluster, victim)
            for w in survivors:
                abort, ok = _recovery(w, t_kill)
                print(f"\n{w.name}: {abort['phase']} aborted {abort['t'] - t_kill:.3f} s after the kill "
                      f"({abort['error']}), first retry done after {ok['done'] - t_kill:.3f} s")
                assert abort["phase"] == "op" and abort["error"] in ("PeerLost", "CollectiveAborted")
                assert abort["intact"], "the input changed after an abort"
                assert abort["t"] - t_kill < DETECT_S and ok["done"] - t_kill < RETRY_S
                assert ok["correct"] and ok["world"] == len(survivors) and victim_id(victim) not in ok["peers"]
            time.sleep(0.3)
        assert all(e["correct"] and e["intact"] for w in workers for e in w.events_of("round"))


def victim_id(process: Process) -> str:
    return process.events_of("joined")[0]["id"]


@pytest.mark.timeout(120)
def test_silent_peer_is_dropped_after_the_heartbeat_timeout() -> None:
    with Cluster(heartbeat_timeout=1.0) as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"h{i}", "loop", "--count", BIG, "--world", "3") for i in range(3)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "two rounds each")
        t_stop = _kill_mid_op(cluster, workers[2], signal.SIGSTOP)
        for w in workers[:2]:
            abort, ok = _recovery(w, t_stop)
            assert abort["error"] == "PeerLost" and "silent" in abort["message"] and abort["intact"]
            assert 0.9 < abort["t"] - t_stop < 1.0 + DETECT_S and ok["correct"] and ok["world"] == 2
        workers[2].kill(signal.SIGCONT)  # it wakes up dropped: told so, not corrupting anyone
        fatal = workers[2].wait_event(lambda e: e["event"] == "fatal", 15)
        assert fatal["error"] in ("MasterLost", "PeerLost", "CollectiveAborted"), fatal
        n = len(workers[0].events_of("round"))
        cluster.wait_for(lambda: len(workers[0].events_of("round")) > n + 2, 20, "rounds after the wake-up")
        assert all(e["correct"] for w in workers for e in w.events_of("round"))


@pytest.mark.timeout(120)
def test_joiners_wait_for_an_update_and_never_disturb_an_operation() -> None:
    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"j{i}", "loop", "--count", BIG, "--world", "2") for i in range(2)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "two rounds each")
        joiner = cluster.spawn("j2", "loop", "--count", BIG)  # connects at once, during some all-reduce
        hello = joiner.wait_event(lambda e: e["event"] == "hello", 30)
        joined = joiner.wait_event(lambda e: e["event"] == "joined", 30)
        first = joiner.wait_event(lambda e: e["event"] == "round", 30)
        late = cluster.spawn("j3", "loop", "--count", BIG)  # and one between operations
        late.wait_event(lambda e: e["event"] == "round", 30)
        n = len(workers[0].events_of("round"))
        cluster.wait_for(lambda: len(workers[0].events_of("round")) > n + 1, 30, "rounds with four peers")
        rounds = workers[0].events_of("round")
        assert not any(w.events_of("abort") for w in workers + [joiner, late]), "a join aborted an operation"
        during = [e for e in rounds if e["done"] >= hello["t"] and e["done"] <= joined["t"]]
        assert during and all(e["world"] == 2 for e in during), "operations while it waited ran without it"
        assert joined["world"] == 3 and first["world"] >= 3 and first["correct"]
        assert "fetched" in first and set(first["fetched"]) == {"w", "rounds"}  # it received the shared state
        assert rounds[-1]["world"] == 4 and all(e["correct"] for e in rounds)


@pytest.mark.timeout(60)
def test_wrong_secret_is_refused_and_the_group_goes_on() -> None:
    with Cluster() as cluster:
        address = cluster.start_master()
        workers = [cluster.spawn(f"a{i}", "loop", "--count", "1000", "--world", "2") for i in range(2)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "rounds")
        intruder = Peer(address, secret=b"not-the-shared-secret")
        with pytest.raises((AuthError, MasterLost), match="secret"):
            intruder.connect(timeout=10)
        intruder.close()
        port = workers[0].events_of("hello")[0]["port"]
        conn = open_connection(("127.0.0.1", port), 5)
        with pytest.raises(AuthError):
            authenticate_client(conn, b"not-the-shared-secret", "peer")
        conn.close()
        n = len(workers[0].events_of("round"))
        cluster.wait_for(lambda: len(workers[0].events_of("round")) > n + 3, 20, "rounds after the intrusion")
        assert not any(w.events_of("abort") for w in workers)


@pytest.mark.timeout(60)
def test_master_death_is_reported_to_every_peer() -> None:
    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"m{i}", "loop", "--count", "1000", "--world", "2") for i in range(2)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "rounds")
        assert cluster.master is not None
        cluster.kill(cluster.master)
        for w in workers:
            fatal = w.wait_event(lambda e: e["event"] == "fatal", 10)
            assert fatal["error"] == "MasterLost" and "master" in fatal["message"]
