"""Smoke test of benchmarks/passes.py, so that it cannot rot: tiny stores, one
repeat; the JSON has every pass, scheduler and ratio, and the two schedulers
wrote the same bits. No timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSES = ("evaluation", "fit_start", "whiten", "encode")


@pytest.mark.slow  # a LocalCluster and four stores: about 8 s
def test_passes_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "passes.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "passes.py"), "--rows", "4000",
         "--chunks", "4,40", "--repeats", "1", "--cpu", "--allow-load",
         "--dir", str(tmp_path / "work"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("command", "commit", "date", "machine", "load_average_before",
                "load_average_after", "targets_met"):
        assert key in report, key
    assert set(report["chunks"]) == {"4", "40"}
    for entry in report["chunks"].values():
        assert all(entry["bit_identical"].values()), entry["bit_identical"]
        for scheduler in ("threads", "local_cluster", "cpu_synchronous"):
            for name in PASSES:
                cell = entry[scheduler][name]
                assert cell["seconds_median"] > 0
                assert {"ratio_to_evaluation", "ratio_to_fewest_chunks"} <= set(cell)
    assert "| whiten |" in proc.stdout
