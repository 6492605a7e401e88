"""The master's state machine: membership, votes, collective coordination, shared-state elections.

Pure logic, no sockets or clocks: every event (``join``, ``lost``, ``handle(peer, message)``)
returns the messages to send, as ``[(peer_id, message), ...]``; ``master.py`` does the I/O and
calls it under one lock. A semantically invalid message raises ``ProtocolError`` (the master then
drops that connection); a stale one (an old epoch, a finished op) is ignored.

Membership. A joiner is *pending* until every current member has voted ``update``; then the
ring becomes the members plus the joiners, the epoch grows, every member gets ``topology``,
connects to its ring neighbours and answers ``ready``; when all are ready they get
``topology_ok``. A member lost while they connect makes a new proposal (next epoch) for the
survivors. With no member left the joiners are admitted at once.

Collectives. A member asks for ``op`` with a tag and a description; when every member has asked
for the tag with the same description, all get ``go`` (op id, epoch) (a member that gives up
waiting sends ``op_cancel``, and the tag fails for all); each answers ``op_done``
when its data has moved, and when all have, all get ``commit``. A lost member, or an ``op_failed``,
sends ``abort`` to everyone instead: the epoch is broken until the next topology update. So an
operation succeeds on every member or fails on every member.

Shared state. Every member sends ``sync`` (revision, strategy, per-key hashes); the most popular
(revision, hashes) among the members that offer their state wins; a revision must be the last
one + 1; members whose hashes differ get a ``sync_plan`` naming a member to fetch from, and when
they have all fetched (``sync_done``) everyone gets ``sync_complete``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from .errors import ProtocolError
from .topology import best_ring
from .wire import field

__all__ = ["STRATEGIES", "Coordinator", "Outbox"]

log = logging.getLogger(__name__)

Outbox = list[tuple[str, dict]]
STRATEGIES = ("enforce_popular", "send_only", "receive_only")
_OP_KEYS = ("kind", "op", "dtype", "count", "quantize", "root", "segment")


@dataclass
class _Peer:
    id: str
    name: str
    host: str
    port: int
    voted_update: bool = False
    ready: bool = False
    requests: dict[int, dict] = dc_field(default_factory=dict)  # tag -> description, not yet started
    sync: dict | None = None
    optimize: bool = False

    def entry(self) -> dict:
        return {"id": self.id, "name": self.name, "host": self.host, "port": self.port}


@dataclass
class _Running:
    tag: int
    waiting: set[str]  # members that have not yet reported op_done


@dataclass
class _SyncRound:
    sync_id: int
    revision: int
    waiting: set[str]  # members still fetching


class Coordinator:
    """All the master's decisions; see the module docstring for the protocol."""

    def __init__(self) -> None:
        self.peers: dict[str, _Peer] = {}
        self.ring: list[str] = []  # members, in ring order (the proposal while connecting)
        self.pending: list[str] = []  # joiners, in arrival order
        self.epoch = 0
        self.connecting = False
        self.broken: str | None = None  # why the data plane of this epoch is unusable
        self.lost_member = False  # ... because a member was lost (peers raise PeerLost)
        self.running: dict[int, _Running] = {}
        self.revision: int | None = None  # of the shared state, after the last synchronisation
        self.bandwidth: dict[tuple[str, str], float] = {}
        self._bench_waiting: set[str] = set()
        self._sync: _SyncRound | None = None
        self._next_id = 1

    # -- events -------------------------------------------------------------------------------

    def join(self, peer_id: str, name: str, host: str, port: int) -> Outbox:
        """A peer authenticated and said hello: it waits, pending, for the next topology update."""
        if peer_id in self.peers:
            raise ProtocolError(f"peer id {peer_id} is already connected")
        self.peers[peer_id] = _Peer(peer_id, name, host, port)
        self.pending.append(peer_id)
        log.info("peer %s (%s) pending; %d member(s)", name, peer_id, len(self.ring))
        out: Outbox = [(peer_id, {"t": "pending", "members": len(self.ring)})]
        return out + self._admit_orphans()

    def lost(self, peer_id: str, reason: str) -> Outbox:
        """A peer's connection closed, broke the protocol or went silent."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return []
        if peer_id in self.pending:
            self.pending.remove(peer_id)
            log.info("pending peer %s left: %s", peer.name, reason)
            return []
        self.ring.remove(peer_id)
        for key in [k for k in self.bandwidth if peer_id in k]:
            del self.bandwidth[key]
        why = f"peer {peer.name} lost ({reason})"
        log.warning("%s; %d member(s) left, epoch %d", why, len(self.ring), self.epoch)
        if not self.ring:
            self.revision = None  # nobody holds the shared state any more
            self.connecting = False
            return self._admit_orphans()
        if self.connecting:
            return self._propose(self.ring)
        self.broken, self.lost_member = why, True
        out = self._abort_all(why, lost=[peer_id])
        return out + self._try_update()

    def handle(self, peer_id: str, msg: dict) -> Outbox:
        """One control message from an authenticated peer."""
        handler = getattr(self, "_on_" + msg["t"], None)
        if handler is None or msg["t"] not in _HANDLED:
            raise ProtocolError(f"unknown message type {msg['t'][:40]!r}")
        if msg["t"] in _MEMBERS_ONLY and peer_id not in self.ring:
            raise ProtocolError(f"{msg['t']!r} from a peer that is not a member")
        return handler(self.peers[peer_id], msg)

    # -- queries ------------------------------------------------------------------------------

    def status(self) -> dict:
        """A summary for the status message and logs."""
        return {"t": "status", "epoch": self.epoch, "ring": [self.peers[p].entry() for p in self.ring],
                "pending": len(self.pending), "revision": self.revision, "broken": self.broken,
                "connecting": self.connecting}

    # -- membership ---------------------------------------------------------------------------

    def _on_update(self, peer: _Peer, msg: dict) -> Outbox:
        if peer.id not in self.ring:
            return [(peer.id, {"t": "update_error", "reason": "not a member yet: wait in connect()"})]
        if self.connecting:
            return []  # it is part of the proposal being connected; topology_ok will answer it
        peer.voted_update = True
        out = self._refuse_blocked("the other members are in update_topology(): call update_topology() too")
        return out + self._try_update()

    def _on_update_cancel(self, peer: _Peer, msg: dict) -> Outbox:
        """A member stopped waiting in update_topology() before everyone voted: its vote is void."""
        if not self.connecting:
            peer.voted_update = False
        return []

    def _try_update(self) -> Outbox:
        if self.connecting or not self.ring or not all(self.peers[p].voted_update for p in self.ring):
            return []
        for p in self.ring:
            self.peers[p].voted_update = False
        ring, self.pending = self.ring + self.pending, []
        return self._propose(ring)

    def _admit_orphans(self) -> Outbox:
        if self.ring or not self.pending or self.connecting:
            return []
        ring, self.pending = self.pending, []
        return self._propose(ring)

    def _propose(self, ring: list[str]) -> Outbox:
        self.epoch += 1
        self.ring, self.connecting = list(ring), True
        self.running.clear()
        self._sync, self._bench_waiting = None, set()
        for p in ring:
            peer = self.peers[p]
            peer.ready, peer.requests, peer.sync, peer.optimize = False, {}, None, False
        entries = [self.peers[p].entry() for p in ring]
        log.info("epoch %d: proposing ring %s", self.epoch, [e["name"] for e in entries])
        return [(p, {"t": "topology", "epoch": self.epoch, "ring": entries, "revision": self.revision}) for p in ring]

    def _on_ready(self, peer: _Peer, msg: dict) -> Outbox:
        epoch = field(msg, "epoch", int)
        if not self.connecting or epoch != self.epoch or peer.id not in self.ring:
            return []  # a stale epoch: a newer proposal is on its way
        peer.ready = True
        if not all(self.peers[p].ready for p in self.ring):
            return []
        self.connecting, self.broken = False, None
        log.info("epoch %d: ring of %d connected", self.epoch, len(self.ring))
        ok = {"t": "topology_ok", "epoch": self.epoch, "pending": bool(self.pending)}
        return [(p, ok) for p in self.ring]

    def _on_leave(self, peer: _Peer, msg: dict) -> Outbox:
        return self.lost(peer.id, "left")

    def _on_status(self, peer: _Peer, msg: dict) -> Outbox:
        return [(peer.id, self.status())]

    def _refuse_blocked(self, reason: str) -> Outbox:
        """Fail requests that can never start because a member waits in update_topology()."""
        out: Outbox = []
        for p in self.ring:
            peer = self.peers[p]
            for tag in peer.requests:
                out.append((p, {"t": "op_error", "tag": tag, "reason": reason, "lost": False}))
            peer.requests = {}
            if peer.sync is not None:
                peer.sync = None
                out.append((p, {"t": "sync_error", "reason": reason}))
            if peer.optimize:
                peer.optimize = False
                out.append((p, {"t": "optimize_error", "reason": reason}))
        return out

    # -- collectives --------------------------------------------------------------------------

    def _on_op(self, peer: _Peer, msg: dict) -> Outbox:
        tag = field(msg, "tag", int)
        desc = {k: msg.get(k) for k in _OP_KEYS}
        for key in ("kind", "op", "dtype"):
            field(msg, key, str)
        field(msg, "count", int)
        refuse = self._refusal(peer)
        if refuse is None and (tag in peer.requests or any(r.tag == tag and peer.id in r.waiting
                                                              for r in self.running.values())):
            refuse = f"tag {tag} is already in flight on this peer: give concurrent collectives distinct tags"
        if refuse is not None:
            return [(peer.id, {"t": "op_error", "tag": tag, "reason": refuse, "lost": self._refused_by_loss(peer)})]
        peer.requests[tag] = desc
        members = [self.peers[p] for p in self.ring]
        if not all(tag in m.requests for m in members):
            return []
        descs = [m.requests.pop(tag) for m in members]
        if any(d != descs[0] for d in descs):
            why = "; ".join(f"{m.name}: {json.dumps(d, sort_keys=True)}" for m, d in zip(members, descs))
            reason = f"members disagree on collective tag {tag}: {why}"
            return [(m.id, {"t": "op_error", "tag": tag, "reason": reason, "lost": False}) for m in members]
        op_id = self._new_id()
        self.running[op_id] = _Running(tag, set(self.ring))
        go = {"t": "go", "tag": tag, "op_id": op_id, "epoch": self.epoch, "pending": bool(self.pending)}
        return [(p, go) for p in self.ring]

    def _refusal(self, peer: _Peer) -> str | None:
        if peer.id not in self.ring:
            return "not a member: wait for connect() to return"
        if self.connecting:
            return "the topology is being updated: call update_topology()"
        if self.broken is not None:
            return f"{self.broken}: call update_topology(), then retry"
        if any(self.peers[p].voted_update for p in self.ring):
            return "the other members are in update_topology(): call update_topology() too"
        return None

    def _on_op_cancel(self, peer: _Peer, msg: dict) -> Outbox:
        """A member gave up waiting for the others to start ``tag``: it fails for all of them."""
        tag = field(msg, "tag", int)
        reason = f"{peer.name} gave up waiting for collective tag {tag}: {field(msg, 'reason', str)[:200]}"
        if peer.requests.pop(tag, None) is not None:
            out: Outbox = []
            for p in self.ring:
                if self.peers[p].requests.pop(tag, None) is not None:
                    out.append((p, {"t": "op_error", "tag": tag, "reason": reason, "lost": False}))
            return out
        running = [op_id for op_id, run in self.running.items() if run.tag == tag and peer.id in run.waiting]
        if not running:
            return []
        self.broken, self.lost_member = reason, False  # it started meanwhile: the others move data without it
        return self._abort_all(reason, lost=[])

    def _refused_by_loss(self, peer: _Peer) -> bool:
        """Whether ``_refusal`` refused because a member was lost (the peer raises PeerLost)."""
        return peer.id in self.ring and not self.connecting and self.broken is not None and self.lost_member

    def _on_op_done(self, peer: _Peer, msg: dict) -> Outbox:
        op_id = field(msg, "op_id", int)
        run = self.running.get(op_id)
        if run is None:
            return []
        run.waiting.discard(peer.id)
        if run.waiting:
            return []
        del self.running[op_id]
        commit = {"t": "commit", "op_id": op_id, "pending": bool(self.pending)}
        return [(p, commit) for p in self.ring]

    def _on_op_failed(self, peer: _Peer, msg: dict) -> Outbox:
        op_id = field(msg, "op_id", int)
        reason = field(msg, "reason", str)[:500]
        if op_id not in self.running:
            return []
        self.broken, self.lost_member = f"collective {op_id} failed on {peer.name}: {reason}", False
        return self._abort_all(self.broken, lost=[])

    def _abort_all(self, reason: str, lost: list[str]) -> Outbox:
        """Every collective, synchronisation and optimisation in flight fails on every member."""
        self.running.clear()
        self._sync, self._bench_waiting = None, set()
        for p in self.ring:
            peer = self.peers[p]
            peer.requests, peer.sync, peer.optimize = {}, None, False
        abort = {"t": "abort", "epoch": self.epoch, "reason": reason, "lost": lost}
        return [(p, abort) for p in self.ring]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # -- shared state -------------------------------------------------------------------------

    def _on_sync(self, peer: _Peer, msg: dict) -> Outbox:
        strategy = field(msg, "strategy", str)
        if strategy not in STRATEGIES:
            raise ProtocolError(f"unknown shared-state strategy {strategy[:40]!r}")
        keys = field(msg, "keys", dict)
        for key, meta in keys.items():
            if not isinstance(meta, dict):
                raise ProtocolError(f"shared-state key {key[:40]!r} must describe a dict")
            field(meta, "hash", str), field(meta, "dtype", str), field(meta, "nbytes", int), field(meta, "shape", list)
        refuse = self._refusal(peer) or ("a synchronisation is already running" if self._sync else None)
        if refuse is not None:
            return [(peer.id, {"t": "sync_error", "reason": refuse, "lost": self._refused_by_loss(peer)})]
        peer.sync = {"revision": field(msg, "revision", int), "strategy": strategy, "keys": keys}
        if not all(self.peers[p].sync is not None for p in self.ring):
            return []
        return self._elect()

    def _elect(self) -> Outbox:
        members = [self.peers[p] for p in self.ring]
        requests = {m.id: m.sync for m in members}
        for m in members:
            m.sync = None
        expected = None if self.revision is None else self.revision + 1
        out: Outbox = []
        votes: dict[str, list[str]] = {}  # canonical (revision, keys) -> voters, in ring order
        for m in members:
            req = requests[m.id]
            if req["strategy"] == "receive_only":
                continue
            if expected is not None and req["revision"] != expected:
                out.append((m.id, {"t": "sync_error", "revision_error": True, "reason":
                                   f"revision {req['revision']} is not the last one + 1 = {expected}"}))
                requests.pop(m.id)
                continue
            votes.setdefault(json.dumps([req["revision"], req["keys"]], sort_keys=True), []).append(m.id)
        if not votes:
            reason = ("no member offers its shared state" if expected is None else
                      f"no member offers shared state of revision {expected}")
            return out + [(p, {"t": "sync_error", "reason": reason}) for p in requests]
        winner = max(votes.values(), key=len)  # ties: the group met first in ring order
        revision, keys = requests[winner[0]]["revision"], requests[winner[0]]["keys"]
        sync_id = self._new_id()
        fetchers: set[str] = set()
        for i, (pid, req) in enumerate(requests.items()):
            fetch, source, error = self._plan(req, keys, winner, i)
            if error is not None:
                out.append((pid, {"t": "sync_error", "reason": error}))
                continue
            if fetch:
                fetchers.add(pid)
            out.append((pid, {"t": "sync_plan", "sync_id": sync_id, "revision": revision, "fetch": fetch,
                              "source": source, "hashes": {k: v["hash"] for k, v in keys.items()}}))
        self._sync = _SyncRound(sync_id, revision, fetchers)
        return out + self._try_complete_sync()

    def _plan(self, req: dict, keys: dict, winners: list[str], index: int) -> tuple[list[str], dict | None, str | None]:
        """(keys to fetch, the member to fetch them from, error) for one member."""
        mine = req["keys"]
        if set(mine) != set(keys):
            return [], None, f"shared-state keys differ from the popular ones: {sorted(set(mine) ^ set(keys))[:8]}"
        for k, meta in keys.items():
            if (mine[k]["dtype"], mine[k]["shape"], mine[k]["nbytes"]) != (meta["dtype"], meta["shape"], meta["nbytes"]):
                return [], None, (f"shared-state key {k!r} is {mine[k]['dtype']}{mine[k]['shape']}, the popular one "
                                  f"{meta['dtype']}{meta['shape']}: allocate it alike")
        fetch = sorted(k for k in keys if mine[k]["hash"] != keys[k]["hash"])
        if not fetch:
            return [], None, None
        if req["strategy"] == "send_only":
            return [], None, "this send_only peer's state differs from the popular one"
        return fetch, self.peers[winners[index % len(winners)]].entry(), None

    def _on_sync_done(self, peer: _Peer, msg: dict) -> Outbox:
        sync_id, ok, why = field(msg, "sync_id", int), field(msg, "ok", bool), field(msg, "reason", str)
        sync = self._sync
        if sync is None or sync_id != sync.sync_id or peer.id not in sync.waiting:
            return []
        if not ok:
            reason = f"{peer.name} could not fetch the shared state: {why[:300]}"
            self._sync = None
            return [(p, {"t": "sync_error", "reason": reason}) for p in self.ring]
        sync.waiting.discard(peer.id)
        return self._try_complete_sync()

    def _try_complete_sync(self) -> Outbox:
        sync = self._sync
        if sync is None or sync.waiting:
            return []
        self._sync, self.revision = None, sync.revision
        done = {"t": "sync_complete", "sync_id": sync.sync_id, "revision": sync.revision,
                "pending": bool(self.pending)}
        return [(p, done) for p in self.ring]

    # -- ring optimisation --------------------------------------------------------------------

    def _on_optimize(self, peer: _Peer, msg: dict) -> Outbox:
        refuse = self._refusal(peer)
        if refuse is not None:
            return [(peer.id, {"t": "optimize_error", "reason": refuse})]
        peer.optimize = True
        if not all(self.peers[p].optimize for p in self.ring):
            return []
        out: Outbox = []
        for p in self.ring:
            self.peers[p].optimize = False
            targets = [self.peers[q].entry() for q in self.ring if q != p and (p, q) not in self.bandwidth]
            if targets:
                self._bench_waiting.add(p)
                out.append((p, {"t": "bench_task", "targets": targets}))
        return out + self._try_reorder()

    def _on_bench_result(self, peer: _Peer, msg: dict) -> Outbox:
        results = field(msg, "results", dict)
        if peer.id not in self._bench_waiting:
            return []
        for target, bw in results.items():
            if target in self.peers and isinstance(bw, (int, float)) and not isinstance(bw, bool) and bw > 0:
                self.bandwidth[(peer.id, target)] = float(bw)
        self._bench_waiting.discard(peer.id)
        return self._try_reorder()

    def _try_reorder(self) -> Outbox:
        if self._bench_waiting:
            return []
        ring = best_ring(self.ring, self.bandwidth)
        if ring == self.ring:
            done = {"t": "optimize_ok", "changed": False, "pending": bool(self.pending)}
            return [(p, done) for p in self.ring]
        log.info("optimized ring: %s", [self.peers[p].name for p in ring])
        return self._propose(ring)


_HANDLED = {name[4:] for name in vars(Coordinator) if name.startswith("_on_")}
_MEMBERS_ONLY = {"op_done", "op_failed", "op_cancel", "sync_done", "bench_result"}


def describe_op(kind: str, op: str, dtype: str, count: int, quantize: str | None, root: int | None,
                segment: int) -> dict[str, Any]:
    """The description members must agree on before a collective's data moves (``segment``:
    bytes per pipelined segment, which fixes how chunks are cut)."""
    return {"kind": kind, "op": op, "dtype": dtype, "count": count, "quantize": quantize, "root": root,
            "segment": segment}
