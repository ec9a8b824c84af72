"""bench/fleet_bench.py runs end to end on a tiny fleet: it prints its table and the harvester
stores exactly what the fleet's specs make a perfect harvester store. A smoke test of the
benchmark, not a timing: no figure of time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # a real harvester run and a Sickle loop against a live fleet


def test_the_fleet_benchmark_on_six_partners_on_two_hosts(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    tiny = ["--partners", "6", "--hosts", "2", "--faulty", "0.5", "--faults", "busy,repeat,nodate"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet_bench.py"), *tiny, "--skip-crowd", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for figure in ("wall / ideal", "records stored", "records/s", "peak RSS", "Sickle loop records/s"):
        assert figure in result.stdout, figure
    (fleet,) = json.loads(out.read_text())["fleets"]
    assert fleet["partners"] == 6 and fleet["hosts"] == [2, 4]
    assert fleet["faults"] == {"busy": 1, "repeat": 1, "nodate": 1}
    assert fleet["expected"] == 6 * 24 - 1  # 24 records each; the record without datestamp is not stored
    (run,) = fleet["runs"]
    assert run["stored"] == fleet["expected"]
    # the record without datestamp is quarantined, the list repeating its token is taken up: all succeed
    assert run["outcomes"] == {"success": 6}
    assert max(run["host_peaks"]) <= 2  # per_host
    (loop,) = fleet["loops"]
    assert fleet["loop_partners"] == 3 and loop["stored"] == fleet["loop_expected"] == 3 * 24
