"""A member of a fault-tolerant, dynamic-membership group: ``Peer``.

    peer = Peer(("127.0.0.1", 48148), secret=b"...")
    peer.connect()                          # blocks until admitted (at the members' next update)
    while training:
        if peer.are_peers_pending():
            peer.update_topology()           # admit joiners: every member calls it
        try:
            mean, info = peer.all_reduce(grads, op="avg", quantize="int8")
        except CollectiveAborted:            # failed on every member; grads unchanged
            peer.update_topology()           # drop the dead, then retry
            continue
        info = peer.sync_shared_state({"w": w}, revision=step)

Threads: the control connection's reader and heartbeat (``control.MasterLink``), the data
listener and its handshakes (``links.DataPlane``), one sender and one reader per lane of the
current epoch (``links.Links``; readers also combine what they receive), and one thread per
``all_reduce_async``. Collectives run in the
calling thread: ask the master (``op``), wait for ``go``, move the data over the ring
(``ring``), report ``op_done`` and return only on ``commit``. An ``abort`` from the master (a
member died, or a collective failed somewhere) fails every collective in flight, here and on
every other member, and closes the epoch's links; the next ``update_topology()`` builds new ones.

``are_peers_pending()`` answers from the last ``go``/``commit``/topology message, which every
member receives in the same order: members that ask at the same point of their program agree,
so they all take the same branch (and nobody waits in ``update_topology()`` alone).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from . import bandwidth, state_sync
from .auth import load_secret
from .control import MasterLink
from .coordinator import STRATEGIES, describe_op
from .errors import (
    CollectiveAborted,
    FtError,
    MasterLost,
    PeerLost,
    ProtocolError,
    RevisionError,
    SharedStateError,
    TopologyError,
)
from .links import DataPlane, Links, Superseded
from .results import ReduceHandle, ReduceInfo, SyncInfo
from .ring import AllGather, AllReduce, Broadcast, RingOp, check_op
from .wire import MAX_DATA, Connection, field

__all__ = ["Peer", "ReduceHandle", "ReduceInfo", "SyncInfo"]

log = logging.getLogger(__name__)
_ABORT_GRACE = 3.0  # after a local data-plane failure, how long to wait for the master's verdict


@dataclass(frozen=True)
class _Topology:
    epoch: int
    ring: tuple[dict, ...]
    rank: int
    revision: int | None = None  # of the shared state, when the master formed this topology

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e["id"] for e in self.ring)


class _OpState:
    """One collective in flight on this peer, keyed by its tag."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.go: dict | None = None
        self.error: tuple[str, bool] | None = None  # (reason, a member was lost)
        self.committed = False
        self.ring_op: RingOp | None = None


class Peer:
    """One member of a fault-tolerant group (see the module docstring).

    ``secret`` (or ``secret_file``, else $MPIFORGE_FT_SECRET) is the group's shared secret. The
    data listener binds ``host`` (loopback unless told otherwise) and other peers reach it at
    ``advertise_host`` (default: the address the master sees). ``lanes`` TCP connections per ring
    neighbour (else $MPIFORGE_FT_LANES, else 2) carry segments of ``segment_bytes`` (else
    $MPIFORGE_FT_SEGMENT_BYTES, else 8 MiB; every member must use the same value); the master
    drops a peer silent for its heartbeat timeout, this peer gives the master ``master_timeout``;
    a collective whose data stops flowing for ``stall_timeout`` seconds fails; a peer that cannot
    connect to its new ring neighbours within ``ring_timeout`` leaves the group (TopologyError),
    so that the others can go on without it.
    """

    def __init__(self, master_addr: tuple[str, int], secret: bytes | str | None = None, *,
                 secret_file: str | None = None, name: str = "", lanes: int | None = None,
                 segment_bytes: int | None = None,
                 host: str = "127.0.0.1", advertise_host: str | None = None, heartbeat_interval: float = 0.2,
                 master_timeout: float = 5.0, io_timeout: float = 10.0, stall_timeout: float = 30.0,
                 ring_timeout: float = 30.0) -> None:
        lanes = _setting(lanes, "MPIFORGE_FT_LANES", 2)
        segment_bytes = _setting(segment_bytes, "MPIFORGE_FT_SEGMENT_BYTES", 8 << 20)
        if not 1 <= segment_bytes <= MAX_DATA:
            raise ValueError(f"segment_bytes must be in [1, {MAX_DATA}], got {segment_bytes}")
        self.master_addr = (str(master_addr[0]), int(master_addr[1]))
        self.name = name
        self.segment_bytes = segment_bytes
        self.stall_timeout, self.ring_timeout = stall_timeout, ring_timeout
        self._secret = load_secret(secret, secret_file)
        self._plane = DataPlane(self._secret, host, lanes, io_timeout, stall_timeout)
        self._plane.services["fetch"] = self._serve_fetch
        self._plane.services["bench"] = bandwidth.serve
        self._hello = {"name": name, "port": self._plane.port, "host": advertise_host or ""}
        self._heartbeat, self._master_timeout, self._io_timeout = heartbeat_interval, master_timeout, io_timeout
        self._link: MasterLink | None = None
        self._cv = threading.Condition()
        self._topology: _Topology | None = None
        self._proposal: dict | None = None
        self._ok_epoch = 0
        self._update_error: str | None = None
        self._links: Links | None = None
        self._broken: tuple[str, bool] | None = None
        self._aborts = 0
        self._lost: str | None = None
        self._ops: dict[int, _OpState] = {}
        self._pending = False
        self._inbox: deque[dict] = deque()  # sync and optimize replies
        self._serving: tuple[Mapping[str, np.ndarray], dict[str, str]] | None = None
        self.peer_id = ""

    # -- properties ---------------------------------------------------------------------------

    @property
    def world_size(self) -> int:
        """Members of the current epoch (0 before connect() returns)."""
        return len(self._topology.ring) if self._topology else 0

    @property
    def rank(self) -> int:
        """This peer's position in the ring (changes with every topology update)."""
        return self._topology.rank if self._topology else -1

    @property
    def epoch(self) -> int:
        return self._topology.epoch if self._topology else 0

    @property
    def peers(self) -> tuple[str, ...]:
        """Ids of the members, in ring order."""
        return self._topology.ids if self._topology else ()

    @property
    def shared_revision(self) -> int | None:
        """The shared state's revision when the current topology formed (None: never synchronised);
        a joiner that sees a number enters a group that already trains, and receives its state."""
        return self._topology.revision if self._topology else None

    @property
    def data_port(self) -> int:
        """The TCP port other peers connect to (ring lanes, shared-state fetches, bandwidth tests)."""
        return self._plane.port

    def are_peers_pending(self) -> bool:
        """Whether joiners wait for ``update_topology()``, as of the last collective or update."""
        self._check_alive()
        return self._pending

    # -- membership ---------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Join the group: returns once the members' next ``update_topology()`` admitted this peer."""
        if self._link is not None:
            raise RuntimeError("connect() was already called on this Peer; make a new Peer to reconnect")
        self._link = MasterLink(self.master_addr, self._secret, self._hello, self._on_message, self._on_lost,
                                self._welcome, self._io_timeout, self._heartbeat, self._master_timeout)
        self._link.open()
        log.info("%s connected as %s; waiting for admission", self.name or "peer", self.peer_id)
        self._await_topology(_deadline(timeout), "admission")

    def _welcome(self, peer_id: str) -> None:
        self.peer_id = self._plane.me = peer_id

    def update_topology(self, timeout: float | None = None) -> None:
        """Vote (with every other member) to admit pending joiners and drop dead members; then
        connect to the new ring neighbours. Waits for this peer's own collectives first."""
        self._require_member()
        deadline = _deadline(timeout)
        with self._cv:
            while self._ops:
                self._check_alive()
                self._cv.wait(_left(deadline, "waiting for this peer's collectives before update_topology()",
                                    TopologyError))
            self._update_error = None
        self._send({"t": "update"})
        self._await_topology(deadline, "update_topology()")

    def optimize_topology(self, timeout: float | None = None, bench_bytes: int = 4 << 20) -> bool:
        """Measure peer-to-peer bandwidth (pairs not yet measured) and let the master reorder the
        ring; every member calls it. Whether the ring changed."""
        self._require_member()
        deadline = _deadline(timeout)
        with self._cv:
            self._inbox.clear()
            aborts = self._aborts
        self._send({"t": "optimize"})
        while True:
            msg = self._next_reply(("bench_task", "optimize_ok", "optimize_error"), aborts, deadline,
                                   stop=lambda: self._new_proposal())
            if msg is None:  # a new ring
                self._await_topology(deadline, "optimize_topology()")
                return True
            if msg["t"] == "optimize_error":
                raise TopologyError(f"optimize_topology() refused: {msg.get('reason')}")
            if msg["t"] == "optimize_ok":
                self._pending = bool(msg.get("pending"))
                return False
            self._send({"t": "bench_result", "results": self._measure(field(msg, "targets", list), bench_bytes)})

    def _measure(self, targets: list[dict], nbytes: int) -> dict[str, float]:
        """Bytes per second to each target peer (1 for one that could not be measured)."""
        results = {}
        for target in targets:
            try:
                results[target["id"]] = bandwidth.measure(partial(self._plane.connect, target), nbytes)
            except (FtError, OSError, KeyError, TypeError) as exc:
                log.warning("bandwidth test to %s failed: %s", target.get("name"), exc)
                results[str(target.get("id"))] = 1.0
        return results

    def close(self) -> None:
        """Leave the group and release every socket and thread."""
        if self._link is not None:
            self._link.close()
        links, self._links = self._links, None
        if links is not None:
            links.close("peer closed")
        self._plane.close()

    def __enter__(self) -> Peer:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collectives --------------------------------------------------------------------------

    def all_reduce(self, array: np.ndarray, op: str = "sum", quantize: str | None = None, *, tag: int = 0,
                   out: np.ndarray | None = None, timeout: float | None = None) -> tuple[np.ndarray, ReduceInfo]:
        """``array`` reduced over every member with ``op``; (result, info).

        ``quantize`` ("int8", "fp8", "int4", "fp4") sends float data block-quantized. Raises
        ``CollectiveAborted`` (``PeerLost`` when a member died) on every member alike, with
        ``array`` unchanged (also when ``out`` is ``array``; another ``out`` then holds garbage);
        then call ``update_topology()``. ``timeout`` bounds the wait for the other members to
        call it: past it, the collective fails here with TimeoutError and on the others with
        ``CollectiveAborted``.
        """
        x, result, restore = self._prepare(array, out, op, quantize)
        codec = _codec(quantize)
        desc = describe_op("allreduce", op, x.dtype.str, x.size, quantize, None, self.segment_bytes)

        def build(op_id: int, topo: _Topology) -> RingOp:
            return AllReduce(op_id, topo.rank, len(topo.ring), x.reshape(-1), result.reshape(-1), op, codec,
                             self.segment_bytes, self.stall_timeout)

        info = self._collective(tag, desc, build, timeout, restore=restore, quantize=quantize)
        return result, info

    def all_reduce_async(self, array: np.ndarray, op: str = "sum", quantize: str | None = None, *, tag: int = 0,
                         out: np.ndarray | None = None, timeout: float | None = None) -> ReduceHandle:
        """Start ``all_reduce`` in a thread; concurrent collectives need distinct ``tag``s."""
        self._check_tag(tag)
        with self._cv:
            if tag in self._ops:
                raise ValueError(f"a collective with tag {tag} is already running on this peer: use distinct tags")
        return ReduceHandle(lambda: self.all_reduce(array, op, quantize, tag=tag, out=out, timeout=timeout),
                            f"ft-allreduce-{tag}")

    def broadcast(self, array: np.ndarray, root: int = 0, *, tag: int = 0,
                  timeout: float | None = None) -> tuple[np.ndarray, ReduceInfo]:
        """The array of the member at ring position ``root`` into every member's ``array`` (in place)."""
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or not array.flags.writeable:
            raise TypeError("broadcast needs a writeable C-contiguous numpy array (it is filled in place)")
        _check_dtype(array.dtype)
        size = self.world_size
        if not 0 <= root < max(size, 1):
            raise ValueError(f"root {root} is not a rank of this group of {size}")
        desc = describe_op("broadcast", "none", array.dtype.str, array.size, None, root, self.segment_bytes)

        def build(op_id: int, topo: _Topology) -> RingOp:
            return Broadcast(op_id, topo.rank, len(topo.ring), array.reshape(-1), root,
                             self.segment_bytes, self.stall_timeout)

        return array, self._collective(tag, desc, build, timeout)

    def allgather(self, array: np.ndarray, *, tag: int = 0,
                  timeout: float | None = None) -> tuple[np.ndarray, ReduceInfo]:
        """Every member's ``array`` (same shape and dtype everywhere), stacked along a new axis 0."""
        x = _as_array(array)
        _check_dtype(x.dtype)
        desc = describe_op("allgather", "none", x.dtype.str, x.size, None, None, self.segment_bytes)
        holder: list[np.ndarray] = []

        def build(op_id: int, topo: _Topology) -> RingOp:
            holder.append(np.empty((len(topo.ring), *x.shape), x.dtype))
            return AllGather(op_id, topo.rank, len(topo.ring), x.reshape(-1), holder[0].reshape(-1),
                             self.segment_bytes, self.stall_timeout)

        info = self._collective(tag, desc, build, timeout)
        return holder[0], info

    def _prepare(self, array: np.ndarray, out: np.ndarray | None, op: str,
                 quantize: str | None) -> tuple[np.ndarray, np.ndarray, Callable[[], None] | None]:
        """(input, result buffer, how to restore ``out`` when it is the input and the op fails)."""
        x = _as_array(array)
        _check_dtype(x.dtype)
        check_op(op, x.dtype)
        if quantize is not None and x.dtype.kind != "f":
            raise ValueError(f"quantize={quantize!r} needs floating-point data, got {x.dtype}")
        if out is None:
            return x, np.empty_like(x), None
        if (not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous {x.dtype} array of shape {x.shape}")
        if not np.shares_memory(out, x):
            return x, out, None
        saved = x.copy()  # in place: reduce from a copy, and put it back if the op fails
        return saved, out, lambda: np.copyto(out, saved)

    def _collective(self, tag: int, desc: dict, build: Callable[[int, _Topology], RingOp],
                    timeout: float | None, restore: Callable[[], None] | None = None,
                    quantize: str | None = None) -> ReduceInfo:
        self._check_tag(tag)
        self._require_member()
        start = time.perf_counter()
        state = _OpState(tag)
        with self._cv:
            if tag in self._ops:
                raise ValueError(f"a collective with tag {tag} is already running on this peer: use distinct tags")
            self._raise_if_broken()
            self._ops[tag] = state
        try:
            self._send({"t": "op", "tag": tag, **desc})
            try:
                go = self._await_op(state, lambda: state.go, _deadline(timeout))
            except TimeoutError as exc:
                self._send({"t": "op_cancel", "tag": tag, "reason": str(exc)})  # the others fail too
                raise
            topo = self._topology
            assert topo is not None and self._links is not None
            if field(go, "epoch", int) != topo.epoch:
                raise ProtocolError(f"go for epoch {go['epoch']}, this peer is in epoch {topo.epoch}")
            ring_op = build(field(go, "op_id", int), topo)
            with self._cv:
                state.ring_op = ring_op
                if state.error is not None:
                    raise self._aborted(state.error)
            self._move(state, ring_op, self._links)
            return ReduceInfo(ring_op.op_id, topo.epoch, len(topo.ring), topo.rank, topo.ids, ring_op.bytes_sent,
                              ring_op.bytes_received, time.perf_counter() - start, quantize)
        except BaseException:
            if restore is not None:
                restore()
            raise
        finally:
            with self._cv:
                del self._ops[tag]
                self._cv.notify_all()

    def _move(self, state: _OpState, ring_op: RingOp, links: Links) -> None:
        """Run the ring, report, and wait for the master's commit (or abort)."""
        try:
            ring_op.run(links)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            reason = str(exc)
            links.close(reason)  # no lane thread touches our buffers after this
            try:
                self._send({"t": "op_failed", "op_id": ring_op.op_id, "reason": reason})
            except MasterLost:
                pass
            grace = time.monotonic() + _ABORT_GRACE  # the master's verdict says whether a member died
            with self._cv:
                while state.error is None and self._lost is None and time.monotonic() < grace:
                    self._cv.wait(0.05)
                error = state.error or (f"collective {ring_op.op_id} failed on {self.name or self.peer_id}: {reason}",
                                        False)
                raise self._aborted(error) from None
        self._send({"t": "op_done", "op_id": ring_op.op_id})
        try:
            self._await_op(state, lambda: state.committed, None)
        except FtError:
            links.close("aborted")
            raise

    def _await_op(self, state: _OpState, ready: Callable[[], Any], deadline: float | None) -> Any:
        with self._cv:
            while True:
                if state.error is not None:
                    raise self._aborted(state.error)
                self._check_alive()
                value = ready()
                if value:
                    return value
                self._cv.wait(_left(deadline, f"waiting for the other members to start collective tag {state.tag}"))

    def _aborted(self, error: tuple[str, bool]) -> CollectiveAborted:
        reason, lost = error
        cls = PeerLost if lost else CollectiveAborted
        return cls(f"{reason}; the input is unchanged: call update_topology(), then retry")

    # -- shared state -------------------------------------------------------------------------

    def sync_shared_state(self, state: Mapping[str, np.ndarray], revision: int,
                          strategy: str = "enforce_popular", timeout: float | None = None) -> SyncInfo:
        """Make ``state`` identical on every member: the most popular content (hashes) among the
        members offering theirs wins, and members whose arrays differ fetch them (in place).

        ``revision`` must be the last synchronised revision + 1 (else ``RevisionError``), except
        with ``strategy="receive_only"`` (a joiner: it takes the popular state and revision);
        ``"send_only"`` offers this peer's state and fails rather than receive another.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        if isinstance(revision, bool) or not isinstance(revision, (int, np.integer)) or not 0 <= revision < 1 << 62:
            raise ValueError(f"revision must be a non-negative integer, got {revision!r}")
        state_sync.check_state(state)
        self._require_member()
        start = time.perf_counter()
        deadline = _deadline(timeout)
        keys = state_sync.describe(state)
        with self._cv:
            self._raise_if_broken()
            self._inbox.clear()
            aborts = self._aborts
            self._serving = (state, {k: v["hash"] for k, v in keys.items()})
        try:
            self._send({"t": "sync", "revision": int(revision), "strategy": strategy, "keys": keys})
            plan = self._sync_reply(("sync_plan",), aborts, deadline)
            fetched: dict[str, np.ndarray] = {}
            received = 0
            if plan["fetch"]:
                ok, reason = False, ""
                try:
                    fetched, received = self._fetch(plan)
                    ok = True
                except (FtError, OSError) as exc:
                    reason = str(exc)
                    raise SharedStateError(f"fetching the shared state failed: {exc}") from None
                finally:
                    self._send({"t": "sync_done", "sync_id": plan["sync_id"], "ok": ok, "reason": reason})
            done = self._sync_reply(("sync_complete",), aborts, deadline)
            for key, arr in fetched.items():
                np.copyto(state[key], arr)
            self._pending = bool(done.get("pending"))
            return SyncInfo(field(done, "revision", int), tuple(plan["fetch"]), received, time.perf_counter() - start)
        finally:
            with self._cv:
                self._serving = None

    def _sync_reply(self, kinds: tuple[str, ...], aborts: int, deadline: float | None) -> dict:
        msg = self._next_reply(kinds + ("sync_error",), aborts, deadline)
        assert msg is not None
        if msg["t"] == "sync_error":
            reason = f"sync_shared_state() failed: {msg.get('reason')}"
            if msg.get("revision_error"):
                raise RevisionError(reason)
            if msg.get("lost"):
                raise PeerLost(reason)
            raise SharedStateError(reason)
        return msg

    def _fetch(self, plan: dict) -> tuple[dict[str, np.ndarray], int]:
        state, _ = self._serving or ({}, {})
        source = field(plan, "source", dict)
        return state_sync.fetch(partial(self._plane.connect, source), list(plan["fetch"]), plan["hashes"], state)

    def _serve_fetch(self, conn: Connection, request: dict) -> None:
        with self._cv:
            serving = self._serving
        state, hashes = serving if serving else (None, {})
        state_sync.serve(conn, request, state, hashes, self.segment_bytes)

    # -- waiting for the master -----------------------------------------------------------------

    def _next_reply(self, kinds: tuple[str, ...], aborts: int, deadline: float | None,
                    stop: Callable[[], bool] = lambda: False) -> dict | None:
        """The next inbox message of one of ``kinds``; None when ``stop()``; PeerLost on an abort."""
        with self._cv:
            while True:
                self._check_alive()
                while self._inbox:
                    msg = self._inbox.popleft()
                    if msg["t"] in kinds:
                        return msg
                if self._aborts != aborts:
                    raise self._aborted(self._broken or ("aborted by the master", False))
                if stop():
                    return None
                self._cv.wait(_left(deadline, f"waiting for the master ({'/'.join(kinds)})"))

    def _new_proposal(self) -> bool:
        return self._proposal is not None and field(self._proposal, "epoch", int) > self.epoch

    def _await_topology(self, deadline: float | None, what: str) -> None:
        """Build links for each new proposal until the master confirms one; then adopt it."""
        built: tuple[int, Links] | None = None
        while True:
            with self._cv:
                while True:
                    self._check_alive()
                    if self._update_error is not None:
                        raise TopologyError(f"{what} refused: {self._update_error}")
                    prop = self._proposal
                    if prop is not None and prop["epoch"] > self.epoch:
                        if built is not None and built[0] == prop["epoch"]:
                            if self._ok_epoch >= prop["epoch"]:
                                self._adopt(prop, built[1])
                                return
                        else:
                            break
                    try:
                        self._cv.wait(_left(deadline, what, TopologyError))
                    except TopologyError as exc:
                        if self._topology is None or (prop is not None and prop["epoch"] > self.epoch):
                            self._give_up(str(exc))  # the others wait for us (or we never got in)
                        self._send({"t": "update_cancel"})  # nobody else voted yet: withdraw our vote
                        raise
            if built is not None:
                built[1].close("superseded")
                built = None
            if self._links is not None:
                self._links.close("topology update")
                self._links = None
            epoch, ring = prop["epoch"], prop["ring"]
            rank = [e["id"] for e in ring].index(self.peer_id)
            limit = time.monotonic() + self.ring_timeout  # a neighbour we cannot reach: leave, the rest go on
            try:
                links = self._plane.establish(epoch, ring, rank, min(limit, deadline or limit),
                                              partial(self._superseded, prop))
            except Superseded:
                continue
            except TopologyError as exc:
                self._check_alive()
                self._give_up(f"{what} could not connect the ring: {exc}")
            built = (epoch, links)
            self._send({"t": "ready", "epoch": epoch})

    def _superseded(self, prop: dict) -> bool:
        return self._proposal is not prop or self._lost is not None

    def _give_up(self, reason: str) -> None:
        """Leave the group (the others then go on without us) and raise TopologyError."""
        log.warning("%s; leaving the group", reason)
        if self._link is not None:
            self._link.close()
        with self._cv:
            self._lost = f"left the group: {reason}"
            self._cv.notify_all()
        raise TopologyError(f"{reason}; this peer left the group: make a new Peer and connect() again")

    def _adopt(self, prop: dict, links: Links) -> None:
        ring = tuple(prop["ring"])
        revision = prop.get("revision")
        self._topology = _Topology(prop["epoch"], ring, [e["id"] for e in ring].index(self.peer_id),
                                   revision if isinstance(revision, int) and not isinstance(revision, bool) else None)
        self._links, self._broken = links, None
        log.info("%s: epoch %d, rank %d of %d", self.name or self.peer_id, self.epoch, self.rank, len(ring))

    # -- messages from the master (control reader thread) -----------------------------------------

    def _on_message(self, msg: dict) -> None:
        kind = msg["t"]
        links_to_fail: Links | None = None
        with self._cv:
            if kind == "topology":
                _check_topology(msg, self.peer_id)
                self._proposal = msg
            elif kind == "topology_ok":
                self._ok_epoch = field(msg, "epoch", int)
                self._pending = bool(msg.get("pending"))
            elif kind == "update_error":
                self._update_error = str(msg.get("reason"))
            elif kind in ("go", "op_error"):
                state = self._ops.get(field(msg, "tag", int))
                if state is not None and state.go is None and state.error is None:
                    if kind == "go":
                        state.go = msg
                        self._pending = bool(msg.get("pending"))
                    else:
                        state.error = (str(msg.get("reason")), bool(msg.get("lost")))
            elif kind == "commit":
                op_id = field(msg, "op_id", int)
                for state in self._ops.values():
                    if state.ring_op is not None and state.ring_op.op_id == op_id:
                        state.committed = True
                self._pending = bool(msg.get("pending"))
            elif kind == "abort":
                reason = field(msg, "reason", str)
                lost = bool(field(msg, "lost", list))
                self._broken, self._aborts = (reason, lost), self._aborts + 1
                for state in self._ops.values():
                    if not state.committed and state.error is None:
                        state.error = (reason, lost)
                        if state.ring_op is not None:
                            state.ring_op.fail(reason)
                links_to_fail = self._links
            elif kind in ("pending", "status"):
                pass
            elif kind in ("sync_plan", "sync_complete", "sync_error", "bench_task", "optimize_ok", "optimize_error"):
                self._inbox.append(msg)
            else:
                raise ProtocolError(f"unexpected message {kind[:40]!r} from the master")
            self._cv.notify_all()
        if links_to_fail is not None:
            links_to_fail.fail(f"aborted by the master: {msg.get('reason')}")

    def _on_lost(self, reason: str) -> None:
        with self._cv:
            self._lost = reason
            for state in self._ops.values():
                if state.ring_op is not None:
                    state.ring_op.fail(reason)
            links = self._links
            self._cv.notify_all()
        if links is not None:
            links.fail(f"master lost: {reason}")

    # -- small helpers ------------------------------------------------------------------------

    def _send(self, msg: dict) -> None:
        if self._link is None:
            raise RuntimeError("call connect() first")
        self._link.send(msg)

    def _check_alive(self) -> None:
        if self._lost is not None:
            raise MasterLost(f"{self._lost}; this Peer cannot continue: make a new one and connect()")

    def _require_member(self) -> None:
        self._check_alive()
        if self._topology is None:
            raise RuntimeError("this peer is not a member yet: call connect() first")

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._aborted(self._broken)

    @staticmethod
    def _check_tag(tag: int) -> None:
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= tag < 1 << 31:
            raise ValueError(f"tag must be an integer in [0, 2**31), got {tag!r}")


def _setting(value: int | None, env: str, default: int) -> int:
    """``value``, else the environment variable ``env``, else ``default``."""
    if value is not None:
        return value
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"${env} must be an integer, got {text!r}") from None


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None, what: str, error: type[Exception] = TimeoutError) -> float:
    """Seconds to wait at most (polling at least twice a second); ``error`` past the deadline."""
    if deadline is None:
        return 0.5
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(f"timed out {what}")
    return min(left, 0.5)


def _as_array(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    return np.ascontiguousarray(array)


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "iufc":
        raise TypeError(f"collectives take integer, float or complex arrays, got {dtype}")


def _codec(quantize: str | None):
    if quantize is None:
        return None
    from ..quantize import get_codec  # numba: loaded only when quantizing

    return get_codec(quantize)


def _check_topology(msg: dict, me: str) -> None:
    field(msg, "epoch", int)
    ring = field(msg, "ring", list)
    for entry in ring:
        if not isinstance(entry, dict):
            raise ProtocolError("ring entries must be objects")
        field(entry, "id", str), field(entry, "host", str), field(entry, "port", int), field(entry, "name", str)
    if me not in [e["id"] for e in ring]:
        raise ProtocolError("a topology that does not include this peer")
