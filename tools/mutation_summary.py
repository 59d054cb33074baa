"""Summarise the last `mutmut run` (`make mutate`): score and surviving mutants.

Reads mutmut's own command-line output (`mutmut export-cicd-stats`, `mutmut
results`), prints the score and the survivors grouped by function, and writes
the same text to mutants/summary.txt.

Score = mutants killed (or timed out) / mutants some test ran against. Mutants
in code that no selected test reaches ("no tests") are counted apart: they
say where the hub tests do not look, not how well they check what they run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

MUTMUT = str(Path(sys.executable).with_name("mutmut"))
RESULT = re.compile(r"^\s*(\S+): (.+)$")


def pretty(name: str) -> tuple[str, int]:
    """'playcast.signaling.hub.xǁHubǁsweep__mutmut_3' -> ('hub.Hub.sweep', 3);
    'playcast.signaling.hub.x_new_id__mutmut_1' -> ('hub.new_id', 1)."""
    function, _, number = name.rpartition("__mutmut_")
    module, _, mangled = function.rpartition(".")
    if mangled.startswith("xǁ"):
        qualname = ".".join(p for p in mangled[2:].split("ǁ") if p)
    else:
        qualname = mangled.removeprefix("x_")
    return f"{module.removeprefix('playcast.signaling.')}.{qualname}", int(number)


def main() -> int:
    subprocess.run([MUTMUT, "export-cicd-stats"], check=True, capture_output=True)
    stats = json.loads(Path("mutants/mutmut-cicd-stats.json").read_text())
    listing = subprocess.run([MUTMUT, "results"], check=True, capture_output=True, text=True)
    by_status: dict[str, list[str]] = defaultdict(list)
    for line in listing.stdout.splitlines():
        match = RESULT.match(line)
        if match:
            by_status[match[2]].append(match[1])

    caught = stats["killed"] + stats["timeout"]
    tested = caught + stats["survived"] + stats["suspicious"] + stats["segfault"]
    score = 100.0 * caught / tested if tested else 0.0
    lines = [
        f"mutation score: {score:.1f}% ({caught} of {tested} tested mutants caught)",
        f"  killed {stats['killed']}, timeout {stats['timeout']}, survived {stats['survived']},"
        f" suspicious {stats['suspicious']}, no tests {stats['no_tests']},"
        f" skipped {stats['skipped']}, total {stats['total']}",
    ]
    for status in ("survived", "suspicious", "no tests"):
        groups: dict[str, list[int]] = defaultdict(list)
        for name in by_status.get(status, []):
            function, number = pretty(name)
            groups[function].append(number)
        if not groups:
            continue
        lines.append(f"{status} ({sum(map(len, groups.values()))}), by function:")
        for function, numbers in sorted(groups.items()):
            if status == "no tests":  # whole functions the tests never call
                lines.append(f"  {function} ({len(numbers)})")
            else:
                lines.append(f"  {function}: {', '.join(map(str, sorted(numbers)))}")
    lines.append("one mutant's change: .venv/bin/mutmut show <module>.<function>__mutmut_<n>")
    text = "\n".join(lines)
    print(text)
    Path("mutants/summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
