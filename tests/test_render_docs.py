"""The measured numbers of the docs are rendered from the results files.

docs/benchmarks.md, and the rendered regions of README.md and
docs/cluster.md, must be exactly what ``python benchmarks/render_docs.py``
makes of benchmarks/templates/ and benchmarks/results/: a number edited by
hand, in a table or in the prose, fails here.
"""

import importlib
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def render_docs():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        yield importlib.import_module("render_docs")
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))


@pytest.fixture(scope="module")
def rendered(render_docs):
    return render_docs.render()


def test_the_committed_docs_are_their_rendering(render_docs, rendered):
    assert render_docs.stale(ROOT, rendered) == [], (
        "run `python benchmarks/render_docs.py` (edit benchmarks/templates/, not the docs)")


def _write(root, texts):
    for doc, text in texts.items():
        os.makedirs(os.path.join(root, os.path.dirname(doc)), exist_ok=True)
        with open(os.path.join(root, doc), "w", encoding="utf-8") as f:
            f.write(text)


def _edit_number(text, start):
    """``text`` with the first decimal number after ``start`` changed by one digit."""
    i = re.compile(r"\d+\.\d+").search(text, start).start()
    return text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:]


def test_a_number_edited_by_hand_is_caught(render_docs, rendered, tmp_path):
    _write(tmp_path, rendered)
    assert render_docs.stale(tmp_path, rendered) == []
    page = rendered["docs/benchmarks.md"]  # a number in the prose, not in a table
    edited = _edit_number(page, page.index("**What the tables say**"))
    _write(tmp_path, {"docs/benchmarks.md": edited})
    assert render_docs.stale(tmp_path, rendered) == ["docs/benchmarks.md"]
    readme = rendered["README.md"]
    _write(tmp_path, {"docs/benchmarks.md": page,
                      "README.md": _edit_number(readme, readme.index("Measured: "))})
    assert render_docs.stale(tmp_path, rendered) == ["README.md"]


def test_placeholders_are_filled_and_unknown_names_refused(render_docs):
    values = {"a.b": 1.2345, "rows": 1000000, "name": "x"}
    text = "{{ a.b:.2f }} s over {{ rows:, }} rows of {{name}}"
    assert render_docs.fill(text, values, "t") == "1.23 s over 1,000,000 rows of x"
    with pytest.raises(render_docs.RenderError, match="t: no value named 'a.c'"):
        render_docs.fill("{{ a.c }}", values, "t")


def test_a_region_must_exist(render_docs):
    with pytest.raises(render_docs.RenderError, match="README.md has no region"):
        render_docs.replace_region("no markers here", "readme-features.md", "x", "README.md")


def test_runs_that_are_not_record_runs_say_so(render_docs):
    import doc_context

    quiet = {"date": "2026-12-01T10:00:00+00:00", "commit": "abcdef1234",
             "machine": {"model_name": "CPU", "cpus": 2},
             "load_average_before": [0.3, 0.2, 0.2], "load_average_after": [1.9, 1, 1]}
    text = doc_context.when(quiet, ROOT, os.path.join(ROOT, "x.json"))
    assert "Not a record run" not in text and "2026-12-01" in text and "abcdef1" in text
    for busy in ({**quiet, "load_average_before": [1.5, 1, 1]},
                 {**quiet, "load_allowed": True}, {**quiet, "quick": True}):
        assert "**Not a record run**" in doc_context.when(busy, ROOT, os.path.join(ROOT, "x"))
    assert "Not a record run** (200 rows" in doc_context.when(quiet, ROOT, "x", "200 rows")


def test_a_tutorial_figure_edited_by_hand_is_caught(render_docs, rendered, tmp_path):
    """docs/tutorial.md is rendered whole, its prose's figures included."""
    _write(tmp_path, rendered)
    page = rendered["docs/tutorial.md"]
    edited = _edit_number(page, page.index("Explained variance"))
    _write(tmp_path, {"docs/tutorial.md": edited})
    assert render_docs.stale(tmp_path, rendered) == ["docs/tutorial.md"]


def test_a_mini_batch_crossing_is_reported_with_the_point_before_it(render_docs):
    ttq_tables = importlib.import_module("ttq_tables")
    points = [[0.0, 0.0, 9.0], [2.0, 1.0, 1.2], [4.0, 2.0, 1.04], [6.0, 3.0, 1.005]]
    setting = {"method": "adam", "batch": 256, "lr": 0.01, "schedule": "cosine"}
    result = {"best": 1.0, "budget": 6.0, "levels": [0.05, 0.001],
              "grid": [{"setting": setting, "points": points}],
              "grid_best": {"adam": {
                  "0.05": {"setting": setting, "index": 0, "reached": [4.0, 2.0]},
                  "0.001": {"setting": setting, "index": 0, "reached": None}}}}
    text = ttq_tables.spacing_sentence(result)
    assert text.startswith("A mini-batch run keeps its weights every 2.00 s")
    assert "best + 5%: PyTorch adam" in text
    assert "+20.00% at its point before, 2.0 s and 1.00 passes" in text
    assert "0.1%" not in text  # not reached: nothing to bound
    assert ttq_tables.spacing_sentence({**result, "grid_best": {}}) == ""


def test_the_colour_tail_table_gives_passes_or_not_reached(render_docs, tmp_path):
    doc_context = importlib.import_module("doc_context")
    result = {"command": "python benchmarks/colour_tail.py", "commit": "0" * 40,
              "date": "2026-12-05T00:00:00+00:00", "machine": {"model_name": "x", "cpus": 2},
              "load_average_before": [0.1, 0.1, 0.1], "load_average_after": [0.2, 0.2, 0.2],
              "load_allowed": True, "best": 2.0, "start_passes": 10.4, "passes": 65.0,
              "levels": [0.01, 0.001],
              "methods": {"a": {"reached": {"0.01": 12.25}, "last_passes": 75.4,
                                "last_cost": 2.004}},
              "drift": {"reference_passes": 600.4, "reference_cost": 2.0002, "units": 10,
                        "hidden": 20,
                        "points": [{"label": "best + 1%", "passes": 12.25,
                                    "cost_over_best": 0.0095, "relative_distance": 0.25,
                                    "top_share": 0.5,
                                    "cosine": {"min": 0.4, "p05": 0.7, "median": 0.99}}]}}
    (tmp_path / "colour_tail.json").write_text(__import__("json").dumps(result))
    values = doc_context.colour_tail(str(tmp_path), ROOT)
    rows = values["tail.table"].splitlines()
    assert rows[0] == "| method (from the same weights) | best + 1% | best + 0.1% | " \
                      "cost after the budget |"
    assert rows[2] == "| a | 12.2 passes | not reached | 2.004000 (+0.200%, 75.4 passes) |"
    drift = values["tail.drift_table"].splitlines()
    assert drift[0].startswith("| point | passes | cost over best | distance to the far point "
                               "| share of the 10 units farthest off |")
    assert drift[2] == "| best + 1% | 12.2 | +0.950% | 25.0% | 50% | 0.40, 0.70, 0.990 |"
    assert round(values["tail.drift_over_best"], 6) == 0.01
    assert values["tail.drift_last_label"] == "best + 1%"
