"""The Peer API in process (an in-process master, peers in threads): argument checks, timeouts
that fail a collective for every member, and a world of one."""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from mpiforge.cli import main
from mpiforge.comms.ft.errors import CollectiveAborted, TopologyError
from mpiforge.comms.ft.master import Master
from mpiforge.comms.ft.peer import Peer

pytestmark = pytest.mark.timeout(60)
SECRET = b"an in-process test secret"


@pytest.fixture
def master():
    m = Master(SECRET, port=0, heartbeat_timeout=3.0).start()
    yield m
    m.stop()


def _group(master: Master, n: int) -> list[Peer]:
    peers = [Peer(master.address, secret=SECRET, name=f"t{i}") for i in range(n)]
    errors: list[BaseException] = []

    def join(p: Peer) -> None:
        try:
            p.connect(timeout=20)
            while p.world_size < n:
                p.update_topology(timeout=20)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(p,)) for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return peers


def _together(peers: list[Peer], call: Callable[[Peer], np.ndarray]) -> dict[str, np.ndarray]:
    """``call(peer)`` on every peer at once (a collective needs them all); results by name."""
    results: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p.name, call(p))) for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_world_of_one_and_argument_checks(master: Master) -> None:
    (peer,) = _group(master, 1)
    with peer:
        x = np.arange(5, dtype=np.float64)
        result, info = peer.all_reduce(x, "avg")
        assert np.array_equal(result, x) and result is not x and info.world_size == 1 and info.peers == (peer.peer_id,)
        assert not peer.are_peers_pending() and peer.rank == 0 and peer.epoch >= 1
        gathered, _ = peer.allgather(x)
        assert gathered.shape == (1, 5) and np.array_equal(gathered[0], x)
        assert peer.broadcast(x.copy())[0].tolist() == x.tolist()
        total, _ = peer.all_reduce_async(x, "max", quantize="int8", tag=9).wait(10)
        assert np.allclose(total, x, atol=0.05)
        with pytest.raises(ValueError, match="floating-point"):
            peer.all_reduce(np.arange(3), "avg")
        with pytest.raises(ValueError, match="unknown reduction"):
            peer.all_reduce(x, "median")
        with pytest.raises(ValueError, match="needs floating-point"):
            peer.all_reduce(np.arange(3), quantize="int8")
        with pytest.raises(ValueError, match="out must be"):
            peer.all_reduce(x, out=np.empty(4))
        with pytest.raises(TypeError, match="numpy array"):
            peer.all_reduce([1, 2, 3])
        with pytest.raises(ValueError, match="tag"):
            peer.all_reduce(x, tag=-1)
        with pytest.raises(ValueError, match="revision"):
            peer.sync_shared_state({"w": x}, revision=-1)
        with pytest.raises(ValueError, match="strategy"):
            peer.sync_shared_state({"w": x}, revision=1, strategy="newest")
        with pytest.raises(ValueError, match="C-contiguous"):
            peer.sync_shared_state({"w": np.zeros((4, 4))[:, 0]}, revision=1)
        assert peer.sync_shared_state({"w": x}, revision=7).revision == 7
        assert peer.sync_shared_state({"w": x}, revision=8).revision == 8
    with pytest.raises(RuntimeError, match="connect"):
        Peer(master.address, secret=SECRET).all_reduce(x)


def test_a_member_that_gives_up_fails_the_collective_everywhere(master: Master) -> None:
    a, b, c = _group(master, 3)
    try:
        outcome: dict[str, BaseException] = {}

        def patient() -> None:
            try:
                b.all_reduce(np.ones(3), tag=5, timeout=20)
            except BaseException as exc:  # noqa: BLE001
                outcome["b"] = exc

        thread = threading.Thread(target=patient)
        thread.start()
        with pytest.raises(TimeoutError, match="tag 5"):
            a.all_reduce(np.ones(3), tag=5, timeout=0.5)  # c never comes
        thread.join(10)
        assert isinstance(outcome.get("b"), CollectiveAborted) and "gave up" in str(outcome["b"])
        results = _together([a, b, c], lambda p: p.all_reduce(np.ones(3))[0])
        assert all(np.array_equal(r, np.full(3, 3.0)) for r in results.values()) and len(results) == 3
        with pytest.raises(TopologyError, match="timed out"):
            a.update_topology(timeout=0.5)  # alone: the others do not vote, so a withdraws its vote
        results = _together([a, b, c], lambda p: p.all_reduce(np.ones(2))[0])
        assert len(results) == 3 and all(np.array_equal(r, np.full(2, 3.0)) for r in results.values()), \
            "the group works after a withdrawn vote"
    finally:
        for p in (a, b, c):
            p.close()


def test_ft_master_command_reports_bad_setups(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["ft-master", "--secret-file", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = runner.invoke(main, ["ft-master", "--port", "0", "--secret-file", str(empty)])
    assert result.exit_code == 1 and "empty" in result.output
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = runner.invoke(main, ["ft-master", "--port", str(busy.getsockname()[1]), "--secret-file", str(secret)])
    assert result.exit_code == 1 and "another --port" in result.output


def test_lanes_and_segment_size_from_the_environment(master: Master, monkeypatch) -> None:
    monkeypatch.setenv("MPIFORGE_FT_LANES", "3")
    monkeypatch.setenv("MPIFORGE_FT_SEGMENT_BYTES", "65536")
    with Peer(master.address, secret=SECRET) as peer:
        assert peer.segment_bytes == 65536 and peer._plane.lanes == 3
    with Peer(master.address, secret=SECRET, lanes=1, segment_bytes=1 << 20) as peer:
        assert peer.segment_bytes == 1 << 20 and peer._plane.lanes == 1  # arguments win
    monkeypatch.setenv("MPIFORGE_FT_LANES", "many")
    with pytest.raises(ValueError, match="MPIFORGE_FT_LANES must be an integer"):
        Peer(master.address, secret=SECRET)
