"""The whole shared state in one canonical form (``SharedState.dump``), equal
for equal states whichever implementation holds it: what the differential
test compares after every operation.

    directory      {worker: {node, game, codecs, addr, port, busy, name, held}}
    pools, lines   {game: [worker or client ids, longest waiting first]}
    waiting        {client: {node, game, codecs}}: the lines' entries
    codecs         {game: {codec: registered workers of the game sending it}}
    sessions       {session: {worker, worker_node, client, client_node, game,
                   codec, started_at, phase, tokens: {worker, client} | None}}
    holds          {name: its workers held now, sorted}: every held name
    node_workers, node_sessions, node_clients
                   {node: sorted ids}: what a live node's cleanup finds, its
                   workers, its players' sessions and its waiting clients
    spent          {ticket jti: until when it stays spent, ms since the epoch}
    other          keys nothing here names (Redis; a leak, or a new kind)

Empty pools, lines, codec counts and node sets are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playcast.signaling.shared.records import SessionEntry


Dump = dict[str, Any]
NODE_SETS = ("node_workers", "node_sessions", "node_clients")


def empty() -> Dump:
    parts = (
        "directory",
        "pools",
        "lines",
        "waiting",
        "codecs",
        "sessions",
        "spent",
        "holds",
        *NODE_SETS,
    )
    return {**{part: {} for part in parts}, "other": []}


def worker(
    node: str,
    game: str,
    codecs: Iterable[str],
    addr: str,
    port: int,
    busy: bool,
    name: str = "",
    held: bool = False,
) -> dict[str, Any]:
    return {
        "node": node,
        "game": game,
        "codecs": list(codecs),
        "addr": addr,
        "port": port,
        "busy": busy,
        "name": name,
        "held": held,
    }


def client(node: str, game: str, codecs: Iterable[str]) -> dict[str, Any]:
    return {"node": node, "game": game, "codecs": list(codecs)}


def session(s: SessionEntry, tokens: Mapping[str, str] | None) -> dict[str, Any]:
    return {
        "worker": s.worker,
        "worker_node": s.worker_node,
        "client": s.client,
        "client_node": s.client_node,
        "game": s.game,
        "codec": s.codec,
        "started_at": s.started_at,
        "phase": s.phase,
        "tokens": None if tokens is None else {r: tokens.get(r) for r in ("worker", "client")},
    }


def add(dump: Dump, kind: str, node: str, member: str) -> None:
    """``member`` is in ``node``'s set of ``kind`` (one of ``NODE_SETS``)."""
    dump[kind].setdefault(node, []).append(member)


def finish(dump: Dump) -> Dump:
    dump["spent"] = dict(sorted(dump["spent"].items()))
    for part in ("pools", "lines", "codecs", *NODE_SETS):
        dump[part] = {k: v for k, v in sorted(dump[part].items()) if v}
    for kind in NODE_SETS:
        dump[kind] = {node: sorted(ids) for node, ids in dump[kind].items()}
    dump["holds"] = {name: sorted(ids) for name, ids in sorted(dump["holds"].items())}
    dump["other"].sort()
    return dump
