"""Exceptions of the fault-tolerant all-reduce, one per recovery the caller takes.

    FtError                  base class
    ├── ProtocolError        a malformed, oversized or unexpected frame: that one connection is closed
    ├── AuthError            the other side does not know the shared secret
    ├── CollectiveAborted    a collective failed on every peer; the input is untouched.
    │   └── PeerLost         ... because a member died: call update_topology(), then retry
    ├── TopologyError        update_topology() / optimize_topology() / connect() did not finish
    ├── SharedStateError     sync_shared_state() failed (no popular state, hash mismatch after a fetch)
    │   └── RevisionError    the revision did not grow by exactly 1
    └── MasterLost           the master is gone or dropped this peer: make a new Peer and connect again
"""
from __future__ import annotations

__all__ = ["AuthError", "CollectiveAborted", "FtError", "MasterLost", "PeerLost", "ProtocolError",
           "RevisionError", "SharedStateError", "TopologyError"]


class FtError(RuntimeError):
    """Base class of every fault-tolerant all-reduce error."""


class ProtocolError(FtError):
    """A frame broke the wire protocol; the connection that carried it has been (or must be) closed."""


class AuthError(FtError):
    """Mutual authentication failed: the other side does not know the shared secret."""


class CollectiveAborted(FtError):
    """The collective failed on every member; the caller's input is unchanged.

    Retry it: after a ``PeerLost`` (or any abort that broke the data plane) call
    ``update_topology()`` first, as the message says.
    """


class PeerLost(CollectiveAborted):
    """A member died or left; the survivors must call ``update_topology()`` before the next collective."""


class TopologyError(FtError):
    """The membership / ring update did not complete (timeout, or the master refused it)."""


class SharedStateError(FtError):
    """Shared-state synchronisation failed on this peer."""


class RevisionError(SharedStateError):
    """The shared-state revision did not grow by exactly 1 since the last synchronisation."""


class MasterLost(FtError):
    """The connection to the master is gone (master died, or it dropped this peer); this Peer is unusable."""
