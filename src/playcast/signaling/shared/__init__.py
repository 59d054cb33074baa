"""The shared state: what the nodes of a cluster share (``records``), the one
interface both implementations keep (``api.SharedState``), in one process
(``memory.MemoryShared``) and in Redis (``redis_state.RedisShared``, imported
from there only: the rules stay free of I/O libraries).
"""

from playcast.signaling.shared import records
from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.holds import Held, Hold, HoldChanged
from playcast.signaling.shared.memory import MemoryShared
from playcast.signaling.shared.records import *  # noqa: F403

__all__ = [*records.__all__, "Held", "Hold", "HoldChanged", "MemoryShared", "SharedState"]
