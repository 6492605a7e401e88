"""``PeerCollective``: a fault-tolerant ``Peer`` behind the shared ``ElasticCollective`` interface.

DiLoCo and user code written against ``mpiforge.comms.collective.Collective`` run unchanged on a
fault-tolerant group; the extra information of ``Peer`` (``ReduceInfo``) is dropped, and its
exceptions (``CollectiveAborted``: ``recover()`` and retry) pass through. Collectives get tags in
the order they are issued within the current epoch (membership), so concurrent ones never share
a tag and every member numbers them alike. Synchronise shared state through ``sync_state`` (it
counts the revisions), not through the peer directly.

    coll = PeerCollective(peer)
    try:
        mean = coll.allreduce(grads, op="avg")
    except CollectiveAborted as exc:
        coll.recover(exc)                  # the survivors (and any joiners) form the new group
"""
from __future__ import annotations

import logging

import numpy as np

from ..collective import ElasticCollective, Handle
from .errors import CollectiveAborted
from .peer import Peer

__all__ = ["PeerCollective"]

log = logging.getLogger(__name__)


class PeerCollective(ElasticCollective):
    """``ElasticCollective`` over a connected ``Peer``; ``quantize`` applies to every all-reduce."""

    def __init__(self, peer: Peer, quantize: str | None = None) -> None:
        self.peer, self.quantize = peer, quantize
        self._epoch, self._issued = -1, 0  # collectives issued in this epoch: the next tag
        self._revision: int | None = None  # of the last state this member synchronised

    @property
    def size(self) -> int:
        return self.peer.world_size

    @property
    def rank(self) -> int:
        return self.peer.rank

    def _tag(self) -> int:
        if self.peer.epoch != self._epoch:
            self._epoch, self._issued = self.peer.epoch, 0
        self._issued += 1
        return (self._issued - 1) % (1 << 30)

    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> Handle:
        handle = self.peer.all_reduce_async(array, op, self.quantize, tag=self._tag(), out=out)
        return Handle(handle, lambda: handle.wait()[0])

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        return self.peer.broadcast(array, root, tag=self._tag())[0]

    def allgather(self, array: np.ndarray) -> np.ndarray:
        return self.peer.allgather(array, tag=self._tag())[0]

    # -- membership -------------------------------------------------------------------------------

    @property
    def needs_state(self) -> bool:
        return self._revision is None and self.peer.shared_revision is not None

    def recover(self, error: BaseException) -> bool:
        if not isinstance(error, CollectiveAborted):
            return False
        log.warning("collective aborted (%s); rebuilding the group", error)
        self._changed()
        return True

    def joiners_waiting(self) -> bool:
        return self.peer.are_peers_pending()

    def admit(self) -> bool:
        before = self.peer.peers
        self._changed()
        return bool(set(self.peer.peers) - set(before))

    def _changed(self) -> None:
        self.peer.update_topology()
        log.info("group of %d: %s", self.peer.world_size, ", ".join(self.peer.peers))

    def sync_state(self, state: dict[str, np.ndarray]) -> None:
        joining = self.needs_state
        revision = 0 if self._revision is None else self._revision + 1
        info = self.peer.sync_shared_state(state, revision, "receive_only" if joining else "enforce_popular")
        self._revision = info.revision
        if info.fetched:
            log.info("shared state revision %d: fetched %s (%d bytes)", info.revision, ", ".join(info.fetched),
                     info.bytes_received)
