"""An operator's hand on the workers (issue 26, the ``/admin`` page).

**Drain** is a hold on a worker's name, in the shared state, cluster-wide:
"finish the session, then stay out of the pool until released". Holding a
name takes its idle workers out of the pool at once; a busy one plays its
session to the end, and when it registers again (a new id, the same name)
the shared state keeps it out (``Publish`` answers ``Held``). Releasing the
name lets its held workers go back. Either way each worker whose place
changed is offered again by its own node (``pairing.hold_changed``), and the
shared state's answer to that decides what the node marks it: held or
available. So a node never trusts a word about a hold that a later one
may have overtaken.

**Restart** shuts one worker down (``server_shutdown``), on whichever node
holds it: the worker starts over and registers again, as after any
session; a player it was serving hears ``worker_failed``.
"""

from __future__ import annotations

from playcast.signaling.rules.bus import Restart
from playcast.signaling.rules.closing import shut_down
from playcast.signaling.rules.events import event
from playcast.signaling.rules.sessions import end, give_up
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import Hold
from playcast.signaling.types import Worker


def hold(core: Core, name: str, on: bool) -> None:
    """Hold the worker name ``name`` out of the pool (``on``), or release it."""
    if not name:
        raise ValueError("only a named worker can be held")
    core.request(Hold(name, on, tuple(sorted(core.games))))
    event("worker_name_held" if on else "worker_name_released", name=name)


def restart(core: Core, worker_id: str, node: str) -> None:
    """Restart the worker ``worker_id``, held by ``node`` (here or another)."""
    if node == core.node:
        restart_here(core, worker_id)
    elif not core.nodes.is_gone(node):
        core.tell(node, Restart(member=worker_id))


def restart_here(core: Core, worker_id: str) -> None:
    """Shut the worker down with ``server_shutdown``; its session, if any,
    ends (its player hears ``worker_failed``). A worker away, whose session
    waits for it to resume, is given up on."""
    worker = core.roster.workers.get(worker_id)
    session_id = worker.session_id if worker is not None else None
    if worker is None:
        away = core.table.away.get(worker_id)
        session = core.table.sessions.get(away.session_id or "") if away is not None else None
        if isinstance(away, Worker) and session is not None:
            event("worker_restart", worker=worker_id, away=True)
            give_up(core, session, "worker")
        return
    event("worker_restart", worker=worker.id, name=worker.name or None, session=session_id)
    session = core.table.sessions.get(session_id) if session_id else None
    if session is not None:
        end(core, session, "server_shutdown", "worker_failed")
    else:
        shut_down(core, worker, "server_shutdown")
