"""bench/bench.py at a tiny N: its second format (every record in MARC21 slim, written by the
harvester's `write_native_in`) is listed against oai_dc, and the staff views' search is timed. A
smoke test of the benchmark, not a timing: figures are asserted present and positive, none
against a target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N = 1_200

pytestmark = pytest.mark.slow  # gunicorn serving a store loaded for the run


def test_the_benchmark_lists_a_second_format_and_searches(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    tiny = ["--records", str(N), "--quick", "--skip-peer", "--skip-pg", "--skip-harvester", "--other-page-size", "0"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), *tiny, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    results = report["results"]

    assert results["second_format_load"]["records"] == N
    formats = results["second_format"]
    for prefix in ("oai_dc", "marcxml", "oai_dc_copy"):
        figures = formats[prefix]
        (run,) = figures["runs"]
        assert run["records"] == N  # the whole list, deleted records included, in each format
        for name in ("bytes_per_record", "first_page_ms", "page_90_ms", "floor_cpu_ms_per_1k"):
            assert figures[name] > 0, (prefix, name)
        # /proc counts CPU in 10 ms ticks: a walk of 1,200 records may read none
        assert figures["server_cpu_ms_per_1k"] >= 0 and figures["server_cpu_us_per_kb"] >= 0
    # MARC21 slim of the same record is the larger (about 3 KB against 1.5 KB): the target is per byte
    assert 1.5 < formats["size_ratio"] < 2.5 and formats["target_uses"] == "per byte"
    assert all(isinstance(formats[k], float) for k in ("per_record_ratio", "per_byte_ratio"))
    checks = {c["figure"]: c for c in report["checks"]}
    ratio = checks["marcxml / oai_dc: server CPU per byte"]
    assert ratio["target"] == "<= 1.1x per byte" and ratio["passed"] in (True, False)
    # oai_dc's bytes served again as a harvested format: the same records (the pages' envelopes
    # echo the longer prefix)
    assert abs(formats["oai_dc_copy"]["bytes_per_record"] / formats["oai_dc"]["bytes_per_record"] - 1) < 0.01
    same = checks["oai_dc_copy (oai_dc's bytes as a harvested format) / oai_dc: server CPU per record"]
    assert same["target"] == "<= 1.1x" and isinstance(formats["same_bytes_per_record_ratio"], float)

    search = results["search"]["queries"]
    assert [q["query"] for q in search] == ["517", "treaty", "telegr"]
    for q in search:
        assert q["hits_counted"] > 0
        assert q["first_page"]["p50_ms"] > 0 and q["count"]["p50_ms"] > 0 and q["http_first_page"]["p50_ms"] > 0
    assert search[0]["hits_counted"] < search[1]["hits_counted"]  # the rare word is rarer
    assert sum("/search" in figure for figure in checks) == 3
