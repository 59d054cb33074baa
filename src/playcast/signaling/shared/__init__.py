"""The shared state: what the nodes of a cluster share (``records``), the one
interface both implementations keep (``api.SharedState``), in one process
(``memory.MemoryShared``) and in Redis (``redis_state.RedisShared``). Import
each name from the module that defines it: the rules need only ``records``,
and importing it runs nothing else.
"""
