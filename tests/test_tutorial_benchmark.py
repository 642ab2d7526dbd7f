"""Smoke test of benchmarks/tutorial.py, so that it cannot rot: the tutorial's
commands at tiny sizes (``--quick``), and the results file it writes holds
every value the tutorial's template (benchmarks/templates/tutorial.md) needs.
No timing or figure is asserted: the fits run 5 iterations."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


@pytest.fixture
def benchmark_modules():
    sys.path.insert(0, BENCHMARKS)
    try:
        import doc_context
        import render_docs

        yield doc_context, render_docs
    finally:
        sys.path.remove(BENCHMARKS)


@pytest.mark.slow
def test_quick_run_gives_every_value_of_the_tutorial(tmp_path, benchmark_modules):
    doc_context, render_docs = benchmark_modules
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "tutorial.py"), "--quick", "--allow-load",
         "--dir", str(tmp_path / "work"), "--json", str(results / "tutorial.json")],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((results / "tutorial.json").read_text())
    for key in ("command", "commit", "date", "machine", "load_average_before",
                "load_average_after", "run_seconds", "steps", "figures", "scale", "import"):
        assert key in report, key
    assert report["quick"] is True and report["load_allowed"] is True
    assert all(step["stdout"] and step["peak_rss_bytes"] > 0
               for step in report["steps"].values())
    for key in ("colour", "zca", "zca_eps003"):
        kinds = report["figures"][key]["filters"]
        assert kinds["flat_colour"] + kinds["grey_edge"] + kinds["colour_edge"] == \
            kinds["units"]
    values = doc_context.tutorial(str(results), ROOT)
    page = render_docs.fill(render_docs.template("tutorial.md"), values, "tutorial.md")
    assert "**Not a record run**" in page
    assert report["steps"]["train"]["stdout"][0] in page
