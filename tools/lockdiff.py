"""Print how an environment's installed versions differ from the lock.

`make test-latest` runs it in its throwaway venv: the packages listed are the
ones a `make lock UPGRADE=1` would move, and the first suspects when that venv
fails while `make test` passes.

    python tools/lockdiff.py requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;([^\\]*))?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match and (match[3] is None or Marker(match[3].strip()).evaluate()):
            pins[canonical(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main() -> int:
    pins = locked(Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
    have = installed()
    rows = [
        (name, pins.get(name, "-"), have.get(name, "-"))
        for name in sorted(pins.keys() | have.keys())
        if pins.get(name) != have.get(name) and not name.startswith("playcast")
    ]
    if not rows:
        print("lockdiff: every installed version is the locked one")
        return 0
    print(f"lockdiff: {len(rows)} packages differ from the lock (locked -> installed)")
    for name, old, new in rows:
        print(f"  {name:<24} {old:>12} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
