"""The shared state: what the nodes of a cluster share (``records``), the one
interface both implementations keep (``api.SharedState``), in one process
(``memory.MemoryShared``) and in Redis (``redis_state.RedisShared``, imported
from there only: the rules stay free of I/O libraries).
"""

from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.holds import Held, Hold, HoldChanged
from playcast.signaling.shared.memory import MemoryShared
from playcast.signaling.shared.records import (
    ClientEntry,
    Denied,
    Done,
    EndSession,
    Forgotten,
    LeaveLine,
    Listed,
    MarkConnected,
    Op,
    Outcome,
    Pair,
    Paired,
    Publish,
    Queued,
    Reattach,
    Reattached,
    Refused,
    SessionEntry,
    SetTokens,
    Withdraw,
    WorkerEntry,
    shared_codec,
)

__all__ = [
    "ClientEntry",
    "Denied",
    "Done",
    "EndSession",
    "Forgotten",
    "Held",
    "Hold",
    "HoldChanged",
    "LeaveLine",
    "Listed",
    "MarkConnected",
    "MemoryShared",
    "Op",
    "Outcome",
    "Pair",
    "Paired",
    "Publish",
    "Queued",
    "Reattach",
    "Reattached",
    "Refused",
    "SessionEntry",
    "SetTokens",
    "SharedState",
    "Withdraw",
    "WorkerEntry",
    "shared_codec",
]
