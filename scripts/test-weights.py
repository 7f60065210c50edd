#!/usr/bin/env python3
"""Write tests/file_seconds.json from a run's JUnit XML: each test file's total seconds (setup,
call and teardown of its tests), which tests/conftest.py uses to start the longest files first.

    .venv/bin/python scripts/test-weights.py /tmp/podnet-test-junit.xml

``scripts/test.sh`` writes that XML on every run (``PODNET_JUNIT`` names another path).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def file_seconds(junit: Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split("::")[0]
        parts = module.split(".")
        # classname is the module path with dots, a class name possibly at the end
        for cut in range(len(parts), 0, -1):
            candidate = Path(*parts[:cut]).with_suffix(".py")
            if (ROOT / candidate).exists():
                totals[str(candidate)] += float(case.get("time") or 0.0)
                break
    return {name: round(seconds, 1) for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    totals = file_seconds(Path(argv[1]))
    if not totals:
        print(f"error: no test cases in {argv[1]}: give the JUnit XML of a whole run", file=sys.stderr)
        return 1
    out = ROOT / "tests" / "file_seconds.json"
    out.write_text(json.dumps(totals, indent=1) + "\n")
    print(f"{out}: {len(totals)} files, {sum(totals.values()) / 60:.1f} test-minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
