"""A peer process for tests, benchmarks and soak runs; prints one JSON event per line.

    python -m mpiforge.comms.ft.worker --master 127.0.0.1:48148 --secret-file S --name a loop --count 4096
    python -m mpiforge.comms.ft.worker ... suite --world 3        # every op / dtype / size, checked
    python -m mpiforge.comms.ft.worker ... bench --world 2 --sizes 16777216

Data is a function of (peer id, case or revision), so every participant can compute what the
result must be from the ids in ``ReduceInfo.peers``. ``loop`` is the churn workload: each round
admits joiners when the master says so, synchronises a shared state (revision + 1; a joiner
receives it), all-reduces integer-valued data and checks the exact sum over that round's
participants; after an abort it checks its input is unchanged and calls update_topology().

Events (``"event"``, with ``"t"`` = time.monotonic(), comparable between processes of a machine):
``hello`` (data port), ``joined`` (id, epoch, world), ``update``, ``round_start``, ``round``
(op id, peers, result and state digests, correct, intact, ``done`` = when the all-reduce
returned), ``abort`` (phase, error, intact), ``error`` / ``fatal``, ``case`` / ``quant`` (suite),
``sync`` (state), ``bench`` (seconds per repetition), ``done``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time

import numpy as np

from .errors import (
    CollectiveAborted,
    FtError,
    RevisionError,
    SharedStateError,
    TopologyError,
)
from .peer import Peer, ReduceInfo

_DTYPES = ("float32", "float64", "int32", "int64")


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def digest(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr).view(np.uint8)).hexdigest()[:16]


def data(peer_id: str, key: int, n: int, dtype: str, kind: str = "int") -> np.ndarray:
    """This peer's deterministic contribution for ``key``: small integers, signs for products,
    or normal floats."""
    rng = np.random.default_rng([int(peer_id[:12], 16), key])
    if kind == "prod":
        return rng.choice(np.array([-2, -1, 1, 2]), n).astype(dtype)
    if kind == "normal":
        return rng.standard_normal(n).astype(dtype)
    return rng.integers(-50, 51, n).astype(dtype)


def reference(info: ReduceInfo, key: int, n: int, dtype: str, op: str, kind: str) -> np.ndarray:
    """What the reduction must give, computed from every participant's data in float64 / int64."""
    wide = np.float64 if dtype.startswith("float") else np.int64
    parts = np.stack([data(p, key, n, dtype, kind).astype(wide) for p in info.peers])
    return {"sum": parts.sum(0), "avg": parts.mean(0), "max": parts.max(0), "min": parts.min(0),
            "prod": parts.prod(0)}[op]


def wait_world(peer: Peer, world: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while peer.world_size < world:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {peer.world_size} of {world} peers after {timeout} s")
        peer.update_topology(timeout=timeout)
        if peer.world_size < world:
            time.sleep(0.05)


# -- suite ------------------------------------------------------------------------------------

def suite(peer: Peer, args: argparse.Namespace) -> None:
    wait_world(peer, args.world)
    key = 0
    for dtype in _DTYPES:
        for n in (1, 7, 1001, args.large):
            for op in ("sum", "avg", "max", "min", "prod"):
                if op == "avg" and not dtype.startswith("float"):
                    continue
                key += 1
                kind = "prod" if op == "prod" else "int"
                x = data(peer.peer_id, key, n, dtype, kind)
                result, info = peer.all_reduce(x, op)
                ref = reference(info, key, n, dtype, op, kind)
                exact = np.array_equal(result, ref.astype(dtype)) if op != "avg" else \
                    np.allclose(result, ref, rtol=1e-6)
                emit("case", case=f"{op}/{dtype}/{n}", ok=bool(exact and result.dtype == x.dtype),
                     digest=digest(result), world=info.world_size)
    for q in ("int8", "fp8", "int4"):
        for op in ("sum", "avg"):
            key += 1
            x = data(peer.peer_id, key, args.large, "float32", "normal")
            result, info = peer.all_reduce(x, op, quantize=q)
            ref = reference(info, key, args.large, "float32", op, "normal")
            bound = max(abs(data(p, key, args.large, "float32", "normal")).max() for p in info.peers)
            err = np.abs(result.astype(np.float64) - ref)
            emit("quant", case=f"{op}/{q}", digest=digest(result), max_err=float(err.max()), bound=float(bound),
                 rms_rel=float(np.sqrt((err ** 2).mean() / (ref ** 2).mean())), world=info.world_size,
                 bytes_sent=info.bytes_sent, exact_bytes=x.nbytes)
    key += 1
    xs = {tag: data(peer.peer_id, key + tag, 5000 * tag + 3, "int64") for tag in (1, 2, 3)}
    handles = {tag: peer.all_reduce_async(x, "sum", tag=tag) for tag, x in xs.items()}
    for tag, handle in handles.items():
        result, info = handle.wait(60)
        ok = np.array_equal(result, reference(info, key + tag, xs[tag].size, "int64", "sum", "int"))
        emit("case", case=f"async/tag{tag}", ok=bool(ok), digest=digest(result), world=info.world_size)
    key += 10
    x = data(peer.peer_id, key, 12345, "float64")
    inplace = x.copy()
    result, info = peer.all_reduce(inplace, "sum", out=inplace)
    emit("case", case="inplace", ok=bool(result is inplace and np.array_equal(
        inplace, reference(info, key, x.size, "float64", "sum", "int"))), digest=digest(inplace), world=info.world_size)
    key += 1
    x = data(peer.peer_id, key, 7777, "int32")
    gathered, info = peer.allgather(x)
    ok = all(np.array_equal(gathered[i], data(p, key, x.size, "int32")) for i, p in enumerate(info.peers))
    emit("case", case="allgather", ok=bool(ok), digest=digest(gathered), world=info.world_size)
    root = info.world_size - 1
    buf = data(peer.peer_id, key, 99999, "float32") if peer.rank == root else np.zeros(99999, np.float32)
    buf, info = peer.broadcast(buf, root=root)
    emit("case", case="broadcast", ok=bool(np.array_equal(buf, data(info.peers[root], key, 99999, "float32"))),
         digest=digest(buf), world=info.world_size)
    if args.collective:
        collective_cases(peer)
    changed = peer.optimize_topology(timeout=60, bench_bytes=1 << 20)
    key += 1
    x = data(peer.peer_id, key, 1001, "int64")
    result, info = peer.all_reduce(x)
    emit("case", case="after-optimize", ok=bool(np.array_equal(result, reference(info, key, 1001, "int64", "sum", "int"))),
         digest=digest(result), world=info.world_size, changed=changed, ring=list(info.peers))
    emit("done")


def collective_cases(peer: Peer) -> None:
    """The same group through the shared ``Collective`` interface."""
    from .collective import PeerCollective

    coll = PeerCollective(peer)
    x = np.arange(10, dtype=np.float64) + coll.rank
    total = coll.allreduce(x, "sum")
    want = np.arange(10) * coll.size + sum(range(coll.size))
    handle = coll.allreduce_async(x, "max")
    top = handle.wait()
    stacked = coll.allgather(x)
    buf = x.copy() if coll.rank == 0 else np.zeros(10)
    coll.broadcast(buf, root=0)
    ok = (np.array_equal(total, want) and np.array_equal(top, np.arange(10.0) + coll.size - 1) and handle.done()
          and stacked.shape == (coll.size, 10) and np.array_equal(buf, np.arange(10.0)))
    emit("case", case="collective", ok=bool(ok), digest=digest(total), world=coll.size)


# -- shared state ------------------------------------------------------------------------------

def state_scenario(peer: Peer, args: argparse.Namespace) -> None:
    """Shared-state synchronisation step by step; the member with the smallest id misbehaves."""
    wait_world(peer, args.world)
    odd = peer.peer_id == min(peer.peers)
    state = {"w": np.arange(1000, dtype=np.float32), "m": np.zeros((3, 5), np.float64)}

    def sync(step: int, revision: int, strategy: str = "enforce_popular") -> None:
        try:
            info = peer.sync_shared_state(state, revision, strategy, timeout=30)
            emit("sync", step=step, odd=odd, revision=info.revision, fetched=list(info.fetched),
                 state=digest(state["w"]) + digest(state["m"]))
        except FtError as exc:
            emit("sync", step=step, odd=odd, error=type(exc).__name__, message=str(exc)[:200])

    sync(1, 1)  # identical everywhere: nothing moves
    state["w"] += 1
    if odd:
        state["w"][7] = -1  # drifted: the popular state wins and this peer fetches "w"
    sync(2, 2)
    sync(3, 4 if odd else 3)  # skipping a revision is refused (for that peer only)
    if odd:
        state["m"][:] = 5
    else:
        state["m"] += 1
    sync(4, 0 if odd else 4, "receive_only" if odd else "enforce_popular")  # rejoin: takes revision 4
    if odd:
        state["w"][0] = 123
    sync(5, 5, "send_only" if odd else "enforce_popular")  # refuses to receive: fails, others agree
    emit("done")


# -- loop (churn) -----------------------------------------------------------------------------

def loop(peer: Peer, args: argparse.Namespace) -> None:
    state = {"w": np.zeros(args.state, np.float64), "rounds": np.zeros(1, np.int64)}
    revision, receive = 0, not args.founder  # a joiner takes the group's state first
    need_update, rounds, end = False, 0, time.monotonic() + args.seconds if args.seconds else float("inf")
    while (not args.rounds or rounds < args.rounds) and time.monotonic() < end:
        phase = "update"
        try:
            if need_update or peer.are_peers_pending():
                peer.update_topology(timeout=args.timeout)
                need_update = False
                emit("update", epoch=peer.epoch, world=peer.world_size, rank=peer.rank)
            phase = "sync"
            fetched: tuple[str, ...] = ()
            if args.sync:
                sync = peer.sync_shared_state(state, revision + 1, "receive_only" if receive else "enforce_popular",
                                              timeout=args.timeout)
                if not receive and sync.revision != revision + 1:
                    emit("error", what=f"revision {sync.revision} after {revision}")
                revision, receive, fetched = sync.revision, False, sync.fetched
            else:
                revision += 1
            phase = "op"
            x = data(peer.peer_id, revision, args.count, args.dtype)
            saved = x.copy()
            emit("round_start", revision=revision, epoch=peer.epoch)
            result, info = peer.all_reduce(x, "sum", quantize=args.quantize, timeout=args.timeout)
            done = time.monotonic()
            correct = args.quantize is not None or np.array_equal(
                result, reference(info, revision, args.count, args.dtype, "sum", "int").astype(args.dtype))
            state["w"][:] += result[:args.state].astype(np.float64)
            state["rounds"] += 1
            rounds += 1
            emit("round", ok=True, revision=revision, epoch=info.epoch, op_id=info.op_id, world=info.world_size,
                 peers=list(info.peers), correct=bool(correct), digest=digest(result), fetched=list(fetched),
                 state=digest(state["w"]), intact=bool(np.array_equal(x, saved)), seconds=info.seconds, done=done)
        except (CollectiveAborted, TopologyError, SharedStateError, TimeoutError) as exc:
            intact = phase != "op" or bool(np.array_equal(x, saved))
            emit("abort", phase=phase, error=type(exc).__name__, message=str(exc)[:300], intact=intact,
                 revision=revision)
            if isinstance(exc, RevisionError) or "no member offers" in str(exc):
                receive = "no member offers" not in str(exc)  # rejoin the popular state, or found it anew
                revision = 0 if not receive else revision
            need_update = True
        if args.sleep:
            time.sleep(args.sleep)
    emit("done", rounds=rounds)


# -- bench ------------------------------------------------------------------------------------

def bench(peer: Peer, args: argparse.Namespace) -> None:
    """Per size: ``warmup`` untimed all-reduces, then ``reps`` timed ones, each after a barrier
    (a one-element all-reduce), as the gloo and MPI baselines time theirs."""
    wait_world(peer, args.world)
    token = np.zeros(1, np.float32)
    for size in args.sizes:
        x = np.ones(size // 4, np.float32)
        out = np.empty_like(x)
        for _ in range(args.warmup):
            peer.all_reduce(x, out=out, quantize=args.quantize)
        times = []
        cpu = time.process_time()
        for _ in range(args.reps):
            peer.all_reduce(token, tag=1)
            start = time.perf_counter()
            peer.all_reduce(x, out=out, quantize=args.quantize)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        emit("bench", size=size, world=peer.world_size, seconds=times, cpu=cpu, digest=digest(out),
             correct=bool((out == peer.world_size).all()))
    emit("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpiforge.comms.ft.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--master", required=True, help="HOST:PORT of the master")
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--lanes", type=int, default=None, help="default: $MPIFORGE_FT_LANES, else 2")
    parser.add_argument("--segment-bytes", type=int, default=None, help="default: $MPIFORGE_FT_SEGMENT_BYTES, else 8 MiB")
    parser.add_argument("--stall-timeout", type=float, default=30.0)
    parser.add_argument("--io-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="WARNING")
    modes = parser.add_subparsers(dest="mode", required=True)
    p = modes.add_parser("suite")
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--large", type=int, default=300_003)
    p.add_argument("--collective", action="store_true", help="also run through the Collective interface")
    p = modes.add_parser("state")
    p.add_argument("--world", type=int, required=True)
    p = modes.add_parser("loop")
    p.add_argument("--count", type=int, default=4096)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--state", type=int, default=256)
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--sleep", type=float, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--quantize", default=None)
    p.add_argument("--no-sync", dest="sync", action="store_false")
    p.add_argument("--world", type=int, default=1, help="wait for this many members before the first round")
    p = modes.add_parser("bench")
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[16 << 20])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quantize", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(threadName)s %(name)s: %(message)s")
    if getattr(args, "collective", False):
        from . import collective  # noqa: F401 - mpi4py's MPI_Init holds the GIL for a second: not while connected
    host, _, port = args.master.rpartition(":")
    peer = Peer((host, int(port)), secret_file=args.secret_file, name=args.name, lanes=args.lanes,
                segment_bytes=args.segment_bytes, stall_timeout=args.stall_timeout, io_timeout=args.io_timeout)
    emit("hello", port=peer.data_port)
    try:
        peer.connect(timeout=120)
        args.founder = peer.world_size == 1
        emit("joined", id=peer.peer_id, epoch=peer.epoch, world=peer.world_size, rank=peer.rank)
        if args.mode == "loop" and args.world > 1:
            wait_world(peer, args.world)
        {"suite": suite, "loop": loop, "bench": bench, "state": state_scenario}[args.mode](peer, args)
    except FtError as exc:
        emit("fatal", error=type(exc).__name__, message=str(exc)[:500])
        return 1
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
