"""``PeerCollective``: a fault-tolerant ``Peer`` behind the shared ``Collective`` interface.

DiLoCo and user code written against ``mpiforge.comms.collective.Collective`` run unchanged on a
fault-tolerant group; the extra information of ``Peer`` (``ReduceInfo``) is dropped, and its
exceptions (``CollectiveAborted``: call ``peer.update_topology()`` and retry) pass through.

    coll = PeerCollective(peer)
    mean = coll.allreduce(grads, op="avg")
"""
from __future__ import annotations

import numpy as np

from ..collective import Collective, Handle
from .peer import Peer

__all__ = ["PeerCollective"]


class PeerCollective(Collective):
    """``Collective`` over a connected ``Peer``; ``quantize`` applies to every all-reduce."""

    def __init__(self, peer: Peer, quantize: str | None = None) -> None:
        self.peer, self.quantize = peer, quantize

    @property
    def size(self) -> int:
        return self.peer.world_size

    @property
    def rank(self) -> int:
        return self.peer.rank

    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None,
                        tag: int = 0) -> Handle:
        handle = self.peer.all_reduce_async(array, op, self.quantize, tag=tag, out=out)
        return Handle(handle, lambda: handle.wait()[0])

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        return self.peer.broadcast(array, root)[0]

    def allgather(self, array: np.ndarray) -> np.ndarray:
        return self.peer.allgather(array)[0]
