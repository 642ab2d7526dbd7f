"""Smoke test of the benchmark command, so that it cannot rot.

Runs ``python benchmarks/run.py --quick`` (tiny shapes, one repeat, the demo
with 5 iterations) and checks that it writes valid JSON with every case,
subject and field. No timing is asserted: CI machines are shared and noisy.
PyTorch is optional; without it the torch subject must be skipped cleanly.
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "benchmarks", "run.py")

STREAMING = ["streamae-one-pass", "streamae-two-pass", "streamae-cached"]
COLD = ["streamae-one-pass-cold", "streamae-two-pass-cold", "disk-cold"]
ALL = STREAMING + ["streamae-one-pass-zstd", "numpy", "torch", "gemm", "gemm-one-pass",
                   "read-only", "read-only-zstd", "read-only-zarr"] + COLD
EXPECTED = {"S": ALL, "L": ALL, "S10": STREAMING + COLD}
FIELDS = ["seconds", "seconds_all", "samples_per_s", "flops", "gflop_per_s", "peak_rss_bytes",
          "passes", "bytes_read", "bytes_read_on_disk", "speedup_vs_numpy", "speedup_vs_torch",
          "time_over_gemm", "time_over_gemm_one_pass"]
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, RUN, "--quick", "--out", str(out), "--workdir", str(tmp / "work")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out / "benchmarks.json") as f:
        report = json.load(f)
    return out, report, proc.stdout


def test_every_case_and_subject_is_reported(quick_run):
    _, report, _ = quick_run
    assert report["quick"] is True
    assert set(report["cases"]) == set(EXPECTED)
    for name, case in report["cases"].items():
        rows = {r["subject"]: r for r in case["subjects"]}
        assert list(rows) == EXPECTED[name]
        for subject, r in rows.items():
            if subject == "torch" and not HAVE_TORCH:
                assert "not installed" in r["skipped"]
                continue
            if subject == "disk-cold" and "Invalid argument" in r.get("error", ""):
                continue  # the temporary directory's file system refuses O_DIRECT
            assert "error" not in r, (name, subject, r.get("error"))
            missing = [f for f in FIELDS if f not in r]
            assert not missing, (name, subject, missing)
            assert r["seconds"] > 0 and r["peak_rss_bytes"] > 0
            assert (r["flops"] > 0) != subject.startswith(("read-only", "disk"))
            assert len(r["seconds_all"]) == report["repeats"] * report["rounds"]
            if subject.startswith(("streamae", "read-only")):
                assert r["passes"] in (1, 2)
                assert r["bytes_read"] == r["passes"] * case["m"] * case["n"] * 4


def test_subjects_agree_on_the_cost(quick_run):
    _, report, _ = quick_run
    for case in report["cases"].values():
        assert case["cost_max_rel_diff"] is not None
        assert case["cost_max_rel_diff"] < 1e-3  # float32 evaluations of one objective


def test_targets_demo_and_outputs(quick_run):
    out, report, stdout = quick_run
    assert report["targets"] and all(
        {"target", "goal", "value", "met"} <= set(t) for t in report["targets"])
    demo = report["demo"]
    assert "error" not in demo, demo.get("error")
    assert demo["train_seconds"] > 0 and demo["first_iteration_seconds"] > 0
    table = (out / "benchmarks.md").read_text()
    assert "### Targets" in table and "### Case S10" in table
    assert "### Targets" in stdout
    if HAVE_MPL:
        assert report["chart"] and (out / "benchmarks.png").stat().st_size > 0
    else:
        assert "matplotlib" in report["chart_skipped"]


def test_torch_subject_skips_cleanly_without_torch(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "streamae_benchmark_subjects", os.path.join(ROOT, "benchmarks", "subjects.py"))
    subjects = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(subjects)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    out = subjects.run_torch({"store": "unused", "n": 4, "s": 2, "hyper": (0.1, 3.0, 0.0)},
                             "torch", 1, 0)
    assert out == {"skipped": subjects.TORCH_HINT}


@pytest.mark.slow  # a moto server and four stores: about 5 s
def test_object_store_benchmark_runs(tmp_path):
    """benchmarks/object_store.py on a tiny store: every subject on both stores,
    the same cost everywhere; the server and the stores are cleaned up."""
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    out = tmp_path / "object_store.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "object_store.py"), "--rows", "4000",
         "--chunk-mib", "0.25", "--repeats", "1", "--rounds", "1", "--out", str(out),
         "--allow-load"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    got = {(r["store"], r["subject"]) for r in report["results"]}
    subjects = ["read-only", "one-pass", "two-pass", "cached", "one-pass, 2 threads per core"]
    assert got == {(store, s) for store in ("local", "s3") for s in subjects}
    assert report["costs_agree_to"] < 1e-6
    assert all(r["seconds"] > 0 for r in report["results"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith("streamae-s3-bench-")]


@pytest.mark.slow  # every subject and a grid, scored: about 10 s
def test_time_to_quality_quick_run(tmp_path):
    """``benchmarks/time_to_quality.py --quick`` runs every subject, scores every kept
    point and records where, when and on what it ran."""
    out = tmp_path / "ttq.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "time_to_quality.py"), "--quick",
         "--reference-iter", "3", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("command", "commit", "date", "machine", "load_average_before",
                "load_average_after"):
        assert report[key], key
    assert report["load_allowed"] is True  # --quick runs whatever the load
    names = list(report["subjects"])
    expected = ["streamae default", "streamae warmup=none", "scipy L-BFGS-B"]
    assert names[:3] == expected and ("torch LBFGS" in names) == HAVE_TORCH
    assert bool(report["skipped"]) is not HAVE_TORCH  # a missing peer is said, not hidden
    runs = report["runs"] + report["grid"]
    reached = min(c for r in runs for _, _, c in r["points"])
    assert report["reference"]["max_iter"] == 3  # a long fit's cost is a candidate too
    assert report["best"] == min(reached, report["reference"]["cost"])
    assert report["best_source"].startswith("long streamae run") == (report["best"] < reached)
    for r in runs:
        # every subject from the same weights (a warm-up's first record cannot say)
        assert r["same_start"] is (None if r["subject"] == "streamae default" and
                                   r["point_phase"][1] == "warmup" else True), r["subject"]
        # LBFGS on a busy machine may spend its budget inside its first step, and a
        # minibatch setting whose learning rate is too large may diverge at once.
        if r.get("stop") != "budget spent inside a step" and not r.get("diverged"):
            assert len(r["points"]) >= 2 and r["points"][-1][1] > 0
        times = [p[0] for p in r["points"]]
        assert times == sorted(times)
    for row in report["subjects"].values():
        assert row["final"][0] >= report["best"] and row["best_point"][0] <= row["final"][0]
    # --rescore: a longer reference fit afterwards; the tolerances follow the new best.
    again = tmp_path / "ttq-rescored.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "time_to_quality.py"), "--rescore",
         str(out), "--reference-iter", "8", "--allow-load", "--workdir", str(tmp_path / "work"),
         "--json", str(again)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rescored = json.loads(again.read_text())
    assert rescored["reference"]["max_iter"] == 8 and rescored["rescored"]["command"]
    assert rescored["best"] == min(report["best"], rescored["reference"]["cost"])
    assert rescored["runs"] == report["runs"]  # nothing run again
    if HAVE_TORCH:
        assert set(report["grid_best"]) == {"adam", "sgd"}
        lbfgs = next(r for r in report["runs"] if r["subject"] == "torch LBFGS")
        assert lbfgs["setting"] == {"max_iter": 20, "max_eval": 25}
        assert sum(e for e in lbfgs["point_evaluations"] if e) == lbfgs["points"][-1][1]
        assert all(t <= lbfgs["budget"] for t, _, _ in lbfgs["points"][:-1])


def _benchmark_module(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_exact_scoring_agrees_with_streamaes_reference(rng):
    """The benchmark's own float64 objective against streamae's NumPy reference,
    for both decoders: two independent transcriptions of the same formulas."""
    from streamae._objective import Hyper, flatten, init_params, reference_cost_and_grad

    exact, datasets = _benchmark_module("exact"), _benchmark_module("datasets")
    for decoder, X in (("sigmoid", rng.uniform(0.1, 0.9, (1000, 12))),
                       ("linear", rng.normal(size=(1000, 12)))):
        d = datasets.Dataset("t", "", 1000, 12, 5, 0.05, 3.0, 1e-3, decoder)
        params = init_params(12, 5, rng)
        want = reference_cost_and_grad(X, params, Hyper(0.05, 3.0, 1e-3, decoder))[0]
        got = exact.exact_cost(X, flatten(params), d, block_rows=300)  # uneven blocks
        assert got == pytest.approx(want, rel=1e-12)
        assert exact.exact_cost(X, np.full_like(flatten(params), np.nan), d) == np.inf


def test_tolerances_are_found_without_assuming_monotone_costs():
    ttq = _benchmark_module("time_to_quality")
    run = {"points": [[0.0, 0, 10.0], [1.0, 1, 1.005], [2.0, 2, 3.0], [3.0, 3, 1.0]]}
    assert ttq.reached(run, 1.0, 0.01) == [1.0, 1]  # the first point within 1%
    assert ttq.reached(run, 1.0, 0.001) == [3.0, 3]
    assert ttq.reached(run, 0.5, 0.01) is None
    assert ttq.final(run) == 1.0 and ttq.best_point(run) == 1.0


def test_the_grid_grows_until_its_best_setting_is_inside():
    ttq = _benchmark_module("time_to_quality")

    def run(lr, cost):
        setting = {"method": "adam", "batch": 64, "lr": lr, "schedule": "constant"}
        return {"setting": setting, "points": [[0.0, 0, 9.0], [1.0, 1, cost]]}

    grid = [run(1e-3, 2.0), run(1e-2, 1.5), run(1e-1, 1.2)]  # best at the top edge
    todo = ttq.edge_extensions(grid, 1.0)
    assert [s["lr"] for s in todo] == [pytest.approx(1e-1 * ttq.LR_STEP)]
    grid.append(run(todo[0]["lr"], 1.3))  # worse beyond: the best is inside now
    assert ttq.edge_extensions(grid, 1.0) == []


@pytest.mark.slow  # stores written and evicted: about 5 s
def test_out_of_core_benchmark_runs(tmp_path):
    """benchmarks/out_of_core.py --quick: both stores, both limits and every
    cold case reported; the cost does not depend on the cache mode or the
    read-ahead. (O_DIRECT may be refused by the temporary directory's file
    system: the benchmark's disk limit then cannot run, so it is skipped.)"""
    out = tmp_path / "out_of_core.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "out_of_core.py"), "--quick",
         "--larger-than-memory", "0.03", "--dir", str(tmp_path / "stores"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0 and "Invalid argument" in proc.stderr:
        pytest.skip("O_DIRECT refused here")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and set(report["stores"]) == {"uncompressed", "zstd"}
    for store in report["stores"].values():
        assert store["disk_limit_s"] > 0 and store["compute_limit_s"] > 0
        assert store["same_cost_across_modes"]
        for name in ("cold one-pass", "cold two-pass", "cold cached strategy"):
            assert store[name]["median_s"] > 0 and store[name]["over_max_limit"] > 0
    big = report["larger_than_memory"]  # here a store of 0.03 GB, the same measurements
    assert big["disk_limit_s"] > 0 and big["compute_limit_s"] > 0 and big["peak_rss_bytes"] > 0
    for name in ("cold one-pass", "cold one-pass, no read-ahead", "cold two-pass"):
        assert big[name]["seconds"] > 0 and big[name]["over_max_limit"] > 0


PROBES = [-1e9, 0.0, 0.5, 1.0, 1.05, 1.2, 1.5, 2.0, 5.0, 9.5, 10.0, 12.0, 100.0, 500.0, 1e9]


def test_every_target_is_a_predicate_that_can_fail():
    """No constant predicate in the targets table: each rejects some value and
    accepts another, and a bad measurement shows as not met."""
    run = _benchmark_module("run")
    goals = run.all_goals()
    assert len(goals) == len(run.RATIO_TARGETS) + 4
    for goal in goals:
        assert any(not goal(v) for v in PROBES), goal.text("")
        assert any(goal(v) for v in PROBES), goal.text("")
    subjects = [{"subject": name, "seconds": 1.0, "seconds_all": [1.0, 1.0],
                 "peak_rss_bytes": 500e6, "rss_after_timed_bytes": 500e6}
                for name in ("numpy", "torch", "streamae-one-pass", "streamae-two-pass",
                             "streamae-cached", "gemm", "gemm-one-pass")]
    cases = {case: {"subjects": subjects} for case in ("S", "L", "S10")}
    table = run.targets(cases, {"train_seconds": 12.0, "first_iteration_seconds": 2.0})
    assert len(table) == len(run.RATIO_TARGETS) + 5  # the RSS ratio goal twice
    speedups = [t for t in table if "speed-up" in t["target"] or "Scaling" in t["target"]]
    assert speedups and all(t["met"] is False for t in speedups)  # 1.0x everywhere
    bad = [t for t in table if t["target"].startswith(("Demo", "Memory: S10 one"))]
    assert len(bad) == 3 and all(t["met"] is False for t in bad)
    assert all("reported" not in t["goal"] for t in table)


def test_a_busy_machine_is_refused_unless_allowed(monkeypatch):
    provenance = _benchmark_module("provenance")
    assert provenance.quiet_enough(0.4, False) and not provenance.quiet_enough(1.5, False)
    assert provenance.quiet_enough(9.0, True)
    # The machine's own load cannot be set from a test: its reading is.
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    with pytest.raises(SystemExit, match=r"refused: the 1-minute load average is 3.00 "
                                         r"\(above 1.0\) after waiting 0 s.*--allow-load"):
        provenance.start("benchmarks/x.py", [], allow_load=False, wait=0)
    record = provenance.finish(provenance.start("benchmarks/x.py", ["--a"], True, 0))
    assert record["load_allowed"] is True and record["command"] == "python benchmarks/x.py --a"
    assert record["load_average_before"] == [3.0, 2.0, 1.0] and record["date"]
    assert record["commit"] and record["machine"]["cpus"] == os.cpu_count()


@pytest.mark.slow  # two fresh processes compile the kernels: about 15 s
def test_commits_benchmark_compares_two_checkouts(tmp_path):
    """benchmarks/commits.py against this very commit: both sides time the same
    fit in fresh processes, and the temporary worktree is gone afterwards."""
    import zarr

    if subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout: nothing to check out")
    store = str(tmp_path / "x.zarr")
    z = zarr.create_array(store, shape=(2000, 8), chunks=(500, 8), dtype="float32")
    z[:] = np.random.default_rng(0).uniform(0.1, 0.9, (2000, 8)).astype("float32")
    out = tmp_path / "commits.json"
    before = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True,
                            text=True).stdout
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "commits.py"), store, "--base", "HEAD",
         "--repeats", "1", "--max-iter", "3", "--allow-load", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["base"] == "HEAD" and report["load_allowed"] is True
    assert all(len(report["seconds_per_evaluation"][k]) == 1 for k in ("base", "head"))
    assert report["median"]["base"] > 0 and report["head_over_base"] > 0
    assert subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True,
                          text=True).stdout == before


def test_colour_tail_products_are_the_gauss_newton_matrix_and_the_exact_decoder(rng):
    """colour_tail.py's Gauss-Newton product against J'J + lambda + beta J_rho' KL'' J_rho
    built from finite-difference Jacobians, and its decoder against the zero gradient."""
    from streamae._objective import flatten, init_params

    tail, datasets = _benchmark_module("colour_tail"), _benchmark_module("datasets")
    m, n, s = 60, 4, 3
    d = datasets.Dataset("t", "", m, n, s, 0.1, 3.0, 1e-2, "linear")
    prob = tail.Problem(d, rng.normal(size=(m, n)))
    p = init_params(n, s, rng)

    def residuals(theta):  # the reconstruction's residuals / sqrt(m), and rho_hat
        q = tail._split(theta, n, s)
        a2 = 1 / (1 + np.exp(-(prob.X @ q["W1"].T + q["b1"])))
        return ((a2 @ q["W2"].T + q["b2"] - prob.X).ravel() / np.sqrt(m), a2.mean(0))

    theta, h = flatten(p), 1e-6
    cols = [[(a - b) / (2 * h) for a, b in zip(residuals(theta + h * e), residuals(theta - h * e))]
            for e in np.eye(theta.size)]
    J_r, J_rho = (np.array([c[k] for c in cols]).T for k in (0, 1))
    rho_hat = residuals(theta)[1]
    kl2 = d.rho / rho_hat ** 2 + (1 - d.rho) / (1 - rho_hat) ** 2
    decay = np.zeros(theta.size)
    for lo, hi in ((0, s * n), (s * n + s, 2 * s * n + s)):
        decay[lo:hi] = d.weight_decay
    G = J_r.T @ J_r + np.diag(decay) + d.beta * J_rho.T @ (kl2[:, None] * J_rho)
    v = rng.normal(size=theta.size)
    got = flatten(prob.gauss_newton(p, tail._split(v, n, s)))
    np.testing.assert_allclose(got, G @ v, rtol=1e-6, atol=1e-8)

    W2, b2 = prob.ridge_decoder(p["W1"], p["b1"])
    _, grad = prob.cost_grad({**p, "W2": W2, "b2": b2})
    assert np.abs(grad["W2"]).max() < 1e-12 and np.abs(grad["b2"]).max() < 1e-12
    assert prob.passes == 3  # the product, the decoder's sums, the gradient


def test_colour_tail_unit_drift_names_the_units_that_moved(rng):
    """unit_drift: nothing moved, then one unit's encoder row turned and its decoder
    column moved: all the distance is that unit's, its cosine the smallest."""
    from streamae._objective import flatten, init_params

    tail = _benchmark_module("colour_tail")
    n, s = 5, 12
    p = init_params(n, s, rng)
    same = tail.unit_drift(flatten(p), flatten(p), n, s)
    assert same["relative_distance"] == 0 and same["top_share"] == 0
    assert np.isclose(same["cosine"]["min"], 1)
    q = {k: v.copy() for k, v in p.items()}
    q["W1"][3] = -q["W1"][3]
    q["W2"][:, 3] += 1.0
    moved = tail.unit_drift(flatten(q), flatten(p), n, s)
    assert np.isclose(moved["top_share"], 1.0) and np.isclose(moved["cosine"]["min"], -1)
    assert np.isclose(moved["cosine"]["median"], 1)
    expected = np.sqrt(4 * np.sum(p["W1"][3] ** 2) + n) / np.sqrt(
        np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
    assert np.isclose(moved["relative_distance"], expected)
