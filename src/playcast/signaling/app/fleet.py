"""The operator page's one document: the cluster's workers, their sessions
and holds, joined with the phones the farms report (``app/farms.py``).

Pure: it reads the merged ``/api/status`` document, the shared state's view
(``cluster/admin.py``: held names, line lengths) and the farms' last
answers. A phone is joined to the worker its farm says it runs (by worker
id), else to a live worker named after its serial (the Android worker's
default name), else listed on its own (unplugged, unauthorized, too hot...).
"""

from __future__ import annotations

from typing import Any

from playcast.signaling.app.farms import Farm


def fleet(
    status: dict[str, Any], shared: dict[str, Any], farms: list[Farm], now: float
) -> dict[str, Any]:
    held = set(shared["held"])
    sessions = {s["worker_id"]: s for s in status["sessions"]}
    live = {w["id"]: w for w in status["workers"]}
    by_name = {w["name"]: w["id"] for w in status["workers"] if w.get("name")}
    phone_of: dict[str, dict[str, Any]] = {}
    loose: list[dict[str, Any]] = []
    for farm in farms:
        stale = farm.error is not None
        for phone in farm.phones():
            view = phone_view(phone, farm.url, stale)
            wid = view["worker_id"] if view["worker_id"] in live else by_name.get(view["serial"])
            if wid is not None and wid not in phone_of:
                phone_of[wid] = view
            else:
                loose.append(view)
    workers = [
        worker_view(w, sessions.get(w["id"]), held, phone_of.get(w["id"]))
        for w in sorted(status["workers"], key=lambda w: (w.get("name") or "~", w["id"]))
    ]
    named = {w["name"] for w in workers if w["name"]}
    nodes = status.get("nodes") or [
        {"id": status["node"], "workers": len(status["workers"]), "clients": len(status["clients"])}
    ]
    return {
        "node": status["node"],
        "time": round(now, 3),
        "nodes": nodes,
        "unanswered_nodes": status.get("unanswered_nodes", []),
        "games": status["games"],
        "lines": shared["lines"],
        "players": len(status["clients"]),
        "sessions": len(status["sessions"]),
        "held": [{"name": name, "connected": name in named} for name in sorted(held)],
        "workers": workers,
        "phones": sorted(loose, key=lambda p: (str(p["serial"]), p["farm"])),
        "farms": [farm.view(now) for farm in farms],
    }


def worker_view(
    w: dict[str, Any],
    session: dict[str, Any] | None,
    held: set[str],
    phone: dict[str, Any] | None,
) -> dict[str, Any]:
    name = w.get("name") or ""
    return {
        "id": w["id"],
        "name": name,
        "status": w["status"],
        # Busy with its name held: leaves the pool once its session ends.
        "draining": w["status"] == "busy" and name in held,
        "held_name": name in held,
        "node": w["node"],
        "game": w["game"],
        "session_id": w["session_id"],
        "client_id": w["client_id"],
        "session_age": session["age"] if session else None,
        "session_phase": session["phase"] if session else None,
        "connected_for": w["connected_for"],
        "phone": phone,
    }


def phone_view(phone: dict[str, Any], farm: str, stale: bool) -> dict[str, Any]:
    health = phone.get("health") if isinstance(phone.get("health"), dict) else {}
    worker = phone.get("worker") if isinstance(phone.get("worker"), dict) else {}
    return {
        "farm": farm,
        "stale": stale,  # its farm did not answer: as it last said
        "serial": phone.get("serial"),
        "state": phone.get("state"),
        "adb_state": phone.get("adb_state"),
        "model": phone.get("model"),
        "holds": phone.get("holds") or [],
        "detail": phone.get("detail"),
        "worker_id": (worker or {}).get("worker_id"),
        "battery_percent": (health or {}).get("battery_percent"),
        "temperature_c": (health or {}).get("temperature_c"),
        "charging": (health or {}).get("charging"),
    }
