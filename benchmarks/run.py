"""streamae benchmark: one full evaluation (cost + gradient), several ways, same data.

Usage (from the repository root)::

    python benchmarks/run.py                 # full run: cases S, L, S10 + demo
    python benchmarks/run.py --quick         # tiny shapes, 1 repeat (CI smoke test)
    python benchmarks/run.py --cases S,L --repeats 7

For every case a Zarr store is written (uncompressed, plus a zstd copy for
the one-pass read; chunks of about 16 MiB as ``streamae import`` writes
them) and every subject (see ``subjects.py``) is timed in its own fresh
process, in ``--rounds`` interleaved turns over all subjects: a warm-up
evaluation, then ``--repeats`` timed ones; the median and the range are
reported, and every ratio is median over median (and fastest over fastest).
Ratios are between numbers measured in the same run. A run is refused when
the 1-minute load average is above 1.0 at its start (``--allow-load``
overrides, recorded). Writes ``OUT/benchmarks.json`` (with the command,
commit, date, machine and load average before and after),
``OUT/benchmarks.png`` (if matplotlib is installed) and ``OUT/benchmarks.md``;
``python benchmarks/render_docs.py`` renders docs/benchmarks.md from the JSON.

PyTorch is optional: ``pip install torch==2.13.0`` (the CPU wheel) to include
it; without it the torch subject is skipped with a message.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import provenance  # noqa: E402

MiB = 2**20

CASES = {
    # name: rows, visible n, hidden s, (rho, beta, lambda), what it stands for
    "S": dict(m=1_000_000, n=64, s=25, hyper=(0.01, 3.0, 1e-4),
              label="1,000,000 x 64 -> 25 (8x8 patches)"),
    "L": dict(m=200_000, n=784, s=196, hyper=(0.1, 3.0, 3e-3),
              label="200,000 x 784 -> 196 (MNIST-sized)"),
    "S10": dict(m=10_000_000, n=64, s=25, hyper=(0.01, 3.0, 1e-4),
                label="10,000,000 x 64 -> 25 (S at 10x the rows)"),
}
QUICK_ROWS = {"S": 10_000, "L": 2_000, "S10": 100_000}
# Timed evaluations per subject and round (without --repeats): more for the
# short case, so that a burst of load from elsewhere weighs less on its median.
CASE_REPEATS = {"S": 9, "L": 3, "S10": 3}

ALL_SUBJECTS = ["streamae-one-pass", "streamae-two-pass", "streamae-cached",
                "streamae-one-pass-zstd", "numpy", "torch", "gemm", "gemm-one-pass",
                "read-only", "read-only-zstd", "read-only-zarr",
                "streamae-one-pass-cold", "streamae-two-pass-cold", "disk-cold"]
# S10 is the scaling and memory case: the streaming strategies only (the
# in-memory references would need about 10 GB of temporaries on a 24 GB machine).
CASE_SUBJECTS = {
    "S": ALL_SUBJECTS,
    "L": ALL_SUBJECTS,
    "S10": ["streamae-one-pass", "streamae-two-pass", "streamae-cached",
            "streamae-one-pass-cold", "streamae-two-pass-cold", "disk-cold"],
}

LABELS = {
    "streamae-one-pass": "streamae one-pass",
    "streamae-two-pass": "streamae two-pass",
    "streamae-cached": "streamae cached",
    "streamae-one-pass-zstd": "streamae one-pass, zstd store",
    "numpy": "NumPy in memory",
    "torch": "PyTorch autograd in memory",
    "gemm": "GEMM-only (5 products)",
    "gemm-one-pass": "GEMM-only, one-pass count (5 products, last 2s wide)",
    "read-only": "read only: one pass over the store, no compute",
    "read-only-zstd": "read only, zstd store",
    "read-only-zarr": "read only, through Zarr's own reads (dask.array.from_zarr)",
    "streamae-one-pass-cold": "streamae one-pass, cold (pages evicted before each)",
    "streamae-two-pass-cold": "streamae two-pass, cold (pages evicted before each)",
    "disk-cold": "disk limit: O_DIRECT reads of the chunk files, 8 threads",
}



# ----------------------------------------------------------------- data

def store_dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def make_store(path, m, n, chunk_rows, codec, seed=0):
    """Write an (m, n) float32 Zarr store of U(0, 1) values chunk by chunk.

    Chunk k holds the same values in every store of the same width and seed,
    whatever the codec, so the raw and zstd stores are the same data. Reuses
    an existing store with the same description.
    """
    import numpy as np
    import zarr

    spec = {"m": m, "n": n, "chunk_rows": chunk_rows, "codec": codec, "seed": seed,
            "dtype": "float32", "values": "uniform [0, 1)"}
    if os.path.exists(path):
        try:
            if zarr.open_array(path, mode="r").attrs.get("benchmark") == spec:
                return spec
        except Exception:  # not a store of ours: rewrite it
            pass
        shutil.rmtree(path)
    kwargs = {} if codec == "zstd" else {"compressors": None}
    z = zarr.create_array(path, shape=(m, n), chunks=(chunk_rows, n), dtype="float32",
                          **kwargs)
    for k, start in enumerate(range(0, m, chunk_rows)):
        stop = min(m, start + chunk_rows)
        rng = np.random.default_rng([seed, n, k])
        z[start:stop] = rng.random((stop - start, n), dtype=np.float32)
    z.attrs["benchmark"] = spec
    return spec


# ----------------------------------------------------------------- workers

def run_worker(spec):
    """Worker mode: time each (case, subject) job in turn, print one JSON line per job."""
    sys.path.insert(0, HERE)
    import subjects

    for job in spec["jobs"]:
        try:
            out = subjects.run_subject(job["case"], job["subject"], spec["repeats"],
                                       spec["warmup"])
        except Exception as exc:  # reported in the results, the run goes on
            out = {"error": f"{type(exc).__name__}: {exc}"}
        out["job"] = [job["case"]["name"], job["subject"]]
        print("RESULT " + json.dumps(out), flush=True)


def spawn(jobs, repeats, warmup, timeout):
    """Run (case, subject) jobs in one fresh worker process.

    Returns a dict (case name, subject) -> raw result.
    """
    spec = {"jobs": jobs, "repeats": repeats, "warmup": warmup}
    keys = [(j["case"]["name"], j["subject"]) for j in jobs]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {k: {"error": f"timed out after {timeout} s"} for k in keys}
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            results[tuple(out.pop("job"))] = out
    for k in keys:
        if k not in results:
            tail = proc.stderr.strip().splitlines()[-3:]
            results[k] = {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}
    return results


def merge_rounds(before, now):
    """Results of one more round: seconds concatenated, peak RSS the largest."""
    if before is None or "seconds" not in before:
        return now
    if "seconds" not in now:
        return before
    merged = dict(now)
    merged["seconds"] = before["seconds"] + now["seconds"]
    for key in ("peak_rss_bytes", "rss_before_bytes", "rss_after_timed_bytes"):
        merged[key] = max(before.get(key) or 0, now.get(key) or 0)
    return merged


# ----------------------------------------------------------------- summary

def summarise(case_name, case, subject, raw, stores):
    import subjects as S

    out = {"subject": subject, "label": LABELS[subject]}
    if "error" in raw or "skipped" in raw:
        out.update({k: raw[k] for k in ("error", "skipped") if k in raw})
        return out
    m, n, s = case["m"], case["n"], case["s"]
    seconds = raw["seconds"]
    med = statistics.median(seconds)
    flops = S.PRODUCTS[subject] * 2 * m * n * s
    passes = S.PASSES[subject]
    store = stores["zstd" if subject.endswith("-zstd") else "raw"]
    out.update({
        "seconds": med,
        "seconds_all": seconds,
        "samples_per_s": m / med,
        "flops": flops,
        "gflop_per_s": flops / med / 1e9,
        "peak_rss_bytes": raw["peak_rss_bytes"],
        "rss_before_bytes": raw.get("rss_before_bytes"),
        "rss_after_timed_bytes": raw.get("rss_after_timed_bytes"),
        "settle_evaluations": raw.get("settle_evaluations", 0),
        "passes": passes,
        "bytes_read": passes * store["nbytes"],
        "bytes_read_on_disk": passes * store["stored_bytes"],
        "cost": raw.get("cost"),
        "grad_norm": raw.get("grad_norm"),
        "read_bytes_per_s": passes * store["nbytes"] / med if passes else None,
    })
    for k in ("speedup_vs_numpy", "speedup_vs_torch", "time_over_gemm",
              "time_over_gemm_one_pass"):
        out[k] = None
    for k in ("torch_version", "torch_threads"):
        if k in raw:
            out[k] = raw[k]
    return out


def add_ratios(rows):
    """Speed-ups vs the in-memory references and times relative to GEMM-only."""
    by = {r["subject"]: r for r in rows}

    def t(name):
        r = by.get(name)
        return r.get("seconds") if r else None

    for r in rows:
        if "seconds" not in r or r["subject"].startswith(("read-only", "disk")):
            continue
        sec = r["seconds"]
        r["speedup_vs_numpy"] = t("numpy") / sec if t("numpy") else None
        r["speedup_vs_torch"] = t("torch") / sec if t("torch") else None
        r["time_over_gemm"] = sec / t("gemm") if t("gemm") else None
        r["time_over_gemm_one_pass"] = sec / t("gemm-one-pass") if t("gemm-one-pass") else None


def check_costs(rows):
    """All subjects that compute the cost must agree (float32: to about 1e-4)."""
    costs = [r["cost"] for r in rows if r.get("cost") is not None]
    if not costs:
        return None
    ref = statistics.median(costs)
    return max(abs(c - ref) / abs(ref) for c in costs)


class Goal:
    """A target's predicate: ``lo <= value <= hi`` (either bound may be open)."""

    def __init__(self, lo=None, hi=None, strict_hi=False):
        self.lo, self.hi, self.strict_hi = lo, hi, strict_hi

    def __call__(self, value):
        if self.lo is not None and value < self.lo:
            return False
        if self.hi is not None and (value >= self.hi if self.strict_hi else value > self.hi):
            return False
        return True

    def text(self, unit):
        if self.lo is not None and self.hi is not None:
            return f"{self.lo:g}{unit} to {self.hi:g}{unit}"
        if self.lo is not None:
            return f">= {self.lo:g}{unit}"
        return f"{'<' if self.strict_hi else '<='} {self.hi:g}{unit}"


def _get(results, case, subject, key="seconds"):
    for r in results.get(case, {}).get("subjects", []):
        if r["subject"] == subject:
            return r.get(key)
    return None


def _fastest(results, case, subject):
    times = _get(results, case, subject, "seconds_all")
    return min(times) if times else None


def _ratio(a, b):
    return a / b if a and b else None


# name, numerator (case, subject), denominator (case, subject), goal, unit
RATIO_TARGETS = [
    ("S: one-pass speed-up vs NumPy", ("S", "numpy"), ("S", "streamae-one-pass"),
     Goal(lo=2.0), "x"),
    ("S: one-pass speed-up vs PyTorch", ("S", "torch"), ("S", "streamae-one-pass"),
     Goal(lo=1.4), "x"),
    ("S: two-pass speed-up vs NumPy", ("S", "numpy"), ("S", "streamae-two-pass"),
     Goal(lo=1.5), "x"),
    ("L: one-pass time / GEMM-only (one-pass count)", ("L", "streamae-one-pass"),
     ("L", "gemm-one-pass"), Goal(hi=1.3), "x"),
    ("L: one-pass time / GEMM-only (5 products)", ("L", "streamae-one-pass"), ("L", "gemm"),
     Goal(hi=1.3), "x"),
    ("L: one-pass speed-up vs NumPy", ("L", "numpy"), ("L", "streamae-one-pass"),
     Goal(lo=2.0), "x"),
] + [(f"Scaling: S10 / S time, {k}", ("S10", f"streamae-{k}"), ("S", f"streamae-{k}"),
      Goal(lo=9.0, hi=11.0), "x") for k in ("one-pass", "two-pass", "cached")]


MEMORY_GOALS = {"peak": (Goal(hi=400), " MB"), "ratio": (Goal(hi=1.10), "")}
DEMO_GOALS = {"train_seconds": (Goal(hi=10, strict_hi=True), " s"),
              "first_iteration_seconds": (Goal(hi=2, strict_hi=True), " s")}


def all_goals():
    """Every predicate of the targets table."""
    return ([goal for *_, goal, _ in RATIO_TARGETS]
            + [goal for goal, _ in (*MEMORY_GOALS.values(), *DEMO_GOALS.values())])


def targets(results, demo):
    """Every target: the measured value (median over median), its predicate, met or not.

    Ratios also give the same ratio of the fastest runs (``fastest``): the
    same statistic on both sides, a second view that a noisy subject moves less.
    """
    out = []

    def add(name, value, goal, unit, fmt, fastest=None):
        out.append({"target": name, "goal": goal.text(unit), "value": value,
                    "fastest": fastest,
                    "shown": "not measured" if value is None else fmt.format(value),
                    "met": None if value is None else bool(goal(value))})

    for name, (ca, sa), (cb, sb), goal, unit in RATIO_TARGETS:
        add(name, _ratio(_get(results, ca, sa), _get(results, cb, sb)), goal, unit,
            "{:.2f}x", _ratio(_fastest(results, ca, sa), _fastest(results, cb, sb)))
    rss10 = _get(results, "S10", "streamae-one-pass", "peak_rss_bytes")
    rss1 = _get(results, "S", "streamae-one-pass", "peak_rss_bytes")
    add("Memory: S10 one-pass peak RSS (level after all evaluations)", rss10 and rss10 / 1e6,
        *MEMORY_GOALS["peak"], "{:.0f} MB")
    add("Memory: S10 / S one-pass peak RSS (same)", _ratio(rss10, rss1),
        *MEMORY_GOALS["ratio"], "{:.3f}")
    add("Memory: S10 / S one-pass peak RSS after the timed evaluations only",
        _ratio(_get(results, "S10", "streamae-one-pass", "rss_after_timed_bytes"),
               _get(results, "S", "streamae-one-pass", "rss_after_timed_bytes")),
        *MEMORY_GOALS["ratio"], "{:.3f}")
    if demo:
        add("Demo: training time (second process, cache warm)", demo.get("train_seconds"),
            *DEMO_GOALS["train_seconds"], "{:.1f} s")
        add("Demo: launch to first iteration, second process",
            demo.get("first_iteration_seconds"), *DEMO_GOALS["first_iteration_seconds"],
            "{:.2f} s")
    return out


def reported(results):
    """Ratios shown for information, with no target: cold reads of stores that fit in
    memory (their floor is for stores larger than memory, benchmarks/out_of_core.py)."""
    out = []
    for case in ("S", "S10"):
        disk, warm = _get(results, case, "disk-cold"), _get(results, case, "streamae-one-pass")
        rows = [(f"{case}: cold one-pass / max(disk limit, one-pass in the page cache)",
                 _get(results, case, "streamae-one-pass-cold"), disk and warm and max(disk, warm)),
                (f"{case}: cold two-pass / cold one-pass",
                 _get(results, case, "streamae-two-pass-cold"),
                 _get(results, case, "streamae-one-pass-cold"))]
        for name, a, b in rows:
            value = _ratio(a, b)
            out.append({"measure": name, "value": value,
                        "shown": "not measured" if value is None else f"{value:.2f}x"})
    return out


# ----------------------------------------------------------------- demo

def bench_demo(workdir, quick, timeout):
    """`streamae demo` twice with a fresh Numba cache, and a time-to-first-iteration probe.

    1. ``streamae demo`` in a new process with an empty Numba cache (compiles);
    2. a second process: launch -> first L-BFGS iteration done, on the demo's
       patches (kernels loaded from the cache);
    3. ``streamae demo`` again (cache warm): the training time it reports.

    With ``quick``: 5 iterations, the usual Numba cache, and no third run.
    """
    # --quick keeps the usual cache: the smoke test must not pay for compiling.
    cache = None if quick else tempfile.mkdtemp(prefix="numba-cache-", dir=workdir)
    env = dict(os.environ, NUMBA_CACHE_DIR=cache) if cache else None
    iters = ["--max-iter", "5"] if quick else []
    cli = [sys.executable, "-m", "streamae.cli", "demo", "--quiet", "--overwrite"] + iters
    out = {"max_iter": 5 if quick else 400,
           "numba_cache_dir": "the usual one" if quick else "fresh temporary directory"}

    def demo(tag):
        target = os.path.join(workdir, f"demo-{tag}")
        t0 = time.perf_counter()
        proc = subprocess.run(cli + ["--out", target], capture_output=True, text=True,
                              env=env, timeout=timeout)
        wall = time.perf_counter() - t0
        found = re.search(r"trained .* in ([0-9.]+) s", proc.stdout)
        if proc.returncode != 0:
            raise RuntimeError(f"streamae demo failed: {proc.stderr.strip()[-500:]}")
        return target, wall, float(found.group(1)) if found else None

    try:
        target, wall1, train1 = demo("cold")
        out.update({"cold_wall_seconds": wall1, "cold_train_seconds": train1})
        if quick:  # the smoke test: one demo and the probe are enough
            out.update({"train_seconds": train1, "warm_wall_seconds": wall1})
        store = os.path.join(target, "patches.zarr")
        probe = [sys.executable, os.path.abspath(__file__), "--probe", store]
        t_launch = time.time()
        proc = subprocess.run(probe + [repr(t_launch)], capture_output=True, text=True,
                              env=env, timeout=timeout)
        line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
        if not line:
            raise RuntimeError(f"probe failed: {proc.stderr.strip()[-500:]}")
        out.update(json.loads(line[-1][len("PROBE "):]))
        if not quick:
            _, wall2, train2 = demo("warm")
            out.update({"train_seconds": train2, "warm_wall_seconds": wall2})
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
        for tag in ("cold", "warm"):
            shutil.rmtree(os.path.join(workdir, f"demo-{tag}"), ignore_errors=True)
    return out


def run_probe(store, t_launch):
    """Probe mode: seconds from the parent's launch to the first finished iteration."""
    t_start = time.time()
    from streamae import SparseAutoencoder

    t_import = time.time()
    marks = {}

    def callback(model, record):
        marks.setdefault("first", time.time())
        return True

    SparseAutoencoder(n_hidden=25, rho=0.01, beta=3.0, weight_decay=1e-4, random_state=0,
                      max_iter=400).fit(store, callback=callback)
    print("PROBE " + json.dumps({
        "first_iteration_seconds": marks["first"] - t_launch,
        "probe_interpreter_start_seconds": t_start - t_launch,
        "probe_import_seconds": t_import - t_start,
        "probe_fit_to_first_iteration_seconds": marks["first"] - t_import,
    }), flush=True)


# ----------------------------------------------------------------- machine

def machine_info():
    """`provenance.machine` with the BLAS libraries NumPy loaded."""
    import provenance

    info = provenance.machine()
    try:
        import numpy  # noqa: F401  (loads its BLAS so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                                   "num_threads")}
                        for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except ImportError:
        pass
    return info


# ----------------------------------------------------------------- report

def _fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def _mb(v):
    return "-" if v is None else f"{v / 1e6:,.0f}"


def _header(report):
    mach = report["machine"]
    v = mach["versions"]
    load = report.get("load_average_before") or mach.get("load_average_at_start", [])
    return [
        f"Machine: {mach.get('model_name', '?')}, {mach['cpus']} cores, "
        f"{mach.get('ram_bytes', 0) / 2**30:.0f} GiB RAM; Python {mach['python']}, "
        + ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "dask", "zarr", "torch")
                    if v.get(k)) + ".",
        "",
        f"Command: `{report['command']}` "
        f"({report['rounds']} rounds of a fresh process per subject, each "
        f"{report['warmup']} warm-up + "
        + "/".join(str(c.get("repeats", report["repeats"])) for c in report["cases"].values())
        + f" timed evaluations ({'/'.join(report['cases'])}); median of all, and their range; "
        f"load average at start {', '.join(f'{x:.1f}' for x in load)})."]


def _case_table(name, case):
    st = case["stores"]
    zstd = (f"; zstd copy {st['zstd']['stored_bytes'] / 1e6:,.0f} MB on disk"
            if st["zstd"]["codec"] == "zstd" else "")
    lines = ["", f"### Case {name}: {case['label']}, float32", "",
             f"Store: {st['raw']['nbytes'] / 1e6:,.0f} MB in chunks of "
             f"{st['raw']['chunk_rows']:,} rows (no compression){zstd}. "
             + (f"Costs agree to {case['cost_max_rel_diff']:.1e} (relative)."
                if case.get("cost_max_rel_diff") is not None else ""), "",
             "| subject | s / eval (median) | min-max | samples/s | GFLOP/s | x NumPy "
             "| x PyTorch | / GEMM | / GEMM 1-pass | peak RSS MB | passes | MB read |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in case["subjects"]:
        if "seconds" not in r:
            why = r.get("skipped") or r.get("error")
            lines.append(f"| {r['label']} | {why} | | | | | | | | | | |")
            continue
        speed = (f"{r['gflop_per_s']:.0f}" if r["flops"] else
                 f"({r['read_bytes_per_s'] / 1e9:.1f} GB/s)")
        lines.append(
            f"| {r['label']} | {r['seconds']:.3f} "
            f"| {min(r['seconds_all']):.3f}-{max(r['seconds_all']):.3f} "
            f"| {r['samples_per_s'] / 1e6:.2f} M "
            f"| {speed} | {_fmt(r['speedup_vs_numpy'], '.2f')} "
            f"| {_fmt(r['speedup_vs_torch'], '.2f')} | {_fmt(r['time_over_gemm'], '.2f')} "
            f"| {_fmt(r['time_over_gemm_one_pass'], '.2f')} | {_mb(r['peak_rss_bytes'])} "
            f"| {r['passes'] if r['passes'] else 'in memory'} "
            f"| {_mb(r['bytes_read']) if r['passes'] else '-'} |")
    return lines


def _demo_table(demo):
    lines = ["", "### `streamae demo` (10,000 patches, 64 -> 25, "
             f"{demo.get('max_iter')} L-BFGS iterations)", ""]
    if "error" in demo:
        lines.append(f"Error: {demo['error']}")
    lines += ["| measurement | seconds |", "|---|---:|"]
    for key, label in (
            ("cold_train_seconds", "training, first process (empty Numba cache: compiles)"),
            ("cold_wall_seconds", "whole `streamae demo`, first process"),
            ("train_seconds", "training, later process (kernels from the cache)"),
            ("warm_wall_seconds", "whole `streamae demo`, later process"),
            ("first_iteration_seconds", "later process: launch to first iteration done"),
            ("probe_import_seconds", "  of which `import streamae`")):
        lines.append(f"| {label} | {_fmt(demo.get(key), '.2f')} |")
    return lines


def _targets_tables(report):
    lines = ["", "### Targets", "",
             "Each target is a predicate on the value measured (medians on both sides of a "
             "ratio); the last column gives the same ratio of the fastest runs.", "",
             "| target | goal | measured | met | fastest runs |", "|---|---|---:|---|---:|"]
    for t in targets(report["cases"], report.get("demo")):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        fastest = "-" if t["fastest"] is None else f"{t['fastest']:.2f}x"
        lines.append(f"| {t['target']} | {t['goal']} | {t['shown']} | {met} | {fastest} |")
    lines += ["", "Reported, with no target (stores smaller than memory are read from the "
              "page cache; the floor for cold reads is checked on stores larger than memory, "
              "below):", "", "| measure | value |", "|---|---:|"]
    lines += [f"| {r['measure']} | {r['shown']} |" for r in reported(report["cases"])]
    return lines


def markdown(report):
    """The generated tables of one benchmarks.json (targets recomputed from the cases)."""
    lines = _header(report)
    for name, case in report["cases"].items():
        lines += _case_table(name, case)
    if report.get("demo"):
        lines += _demo_table(report["demo"])
    lines += _targets_tables(report)
    return "\n".join(lines) + "\n"


def chart(report, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib to draw the chart)"
    cases = [(k, c) for k, c in report["cases"].items()
             if any("seconds" in r for r in c["subjects"])]
    if not cases:
        return "nothing was measured"
    heights = [sum("seconds" in r for r in c["subjects"]) + 1.5 for _, c in cases]
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 0.32 * sum(heights) + 0.8),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    colours = {"streamae": "#1f77b4", "numpy": "#ff7f0e", "torch": "#d62728",
               "gemm": "#7f7f7f", "read": "#2ca02c", "disk": "#8c564b"}
    short = {"streamae-one-pass-zstd": "streamae one-pass (zstd store)",
             "gemm": "GEMM-only (5 products)", "gemm-one-pass": "GEMM-only (one-pass count)",
             "read-only": "read only (no compute)", "read-only-zstd": "read only (zstd store)",
             "read-only-zarr": "read only (through Zarr)"}
    for ax, (name, case) in zip(axes[:, 0], cases):
        rows = [r for r in case["subjects"] if "seconds" in r]
        labels = [short.get(r["subject"], r["label"]) for r in rows]
        secs = [r["seconds"] for r in rows]
        cols = [colours[r["subject"].split("-")[0]] for r in rows]
        y = range(len(rows))
        ax.barh(y, secs, color=cols)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name}: {case['m']:,} x {case['n']} -> {case['s']}", fontsize=9,
                     loc="left")
        for i, sec in enumerate(secs):
            ax.text(sec, i, f" {sec:.2f} s", va="center", fontsize=7)
        ax.set_xlim(0, max(secs) * 1.18)
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("seconds per evaluation (median), shorter is faster", fontsize=8)
    fig.suptitle("streamae: one evaluation (cost + gradient), float32, "
                 f"{report['machine'].get('model_name', '')}, "
                 f"{report['machine']['cpus']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ----------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 1 repeat, demo with 5 iterations (smoke test)")
    p.add_argument("--cases", default="S,L,S10", help="comma-separated cases (S, L, S10)")
    p.add_argument("--subjects", default=None,
                   help="comma-separated subjects (default: all for the case)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed evaluations per subject and round (default 9 for S, 3 for L "
                        "and S10; 1 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="untimed evaluations first")
    p.add_argument("--settle", type=int, default=6,
                   help="untimed evaluations after the timed ones, for streamae subjects, so "
                        "that peak RSS is the level a training run reaches (default 6)")
    p.add_argument("--rounds", type=int, default=2,
                   help="processes per subject, run in turns so that a burst of load from "
                        "elsewhere does not hit one subject only (default 2; 1 with --quick)")
    p.add_argument("--chunk-mib", type=float, default=None,
                   help="store chunk size in MiB (default 16, as streamae import; "
                        "0.25 with --quick)")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="directory for benchmarks.json, .png and .md")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "streamae-bench"),
                   help="where the stores are written (needs about 3.5 GB for S10)")
    p.add_argument("--keep-data", action="store_true", help="keep the stores afterwards")
    p.add_argument("--no-demo", action="store_true", help="skip the demo timings")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    provenance.add_arguments(p)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def plan_case(name, args, chunk_bytes, made):
    """(name, spec, case, stores, subjects) of one case; writes its stores (reused if
    they exist) and appends their paths to ``made``."""
    spec = CASES[name]
    m = QUICK_ROWS[name] if args.quick else spec["m"]
    n, s = spec["n"], spec["s"]
    chunk_rows = max(1, min(m, int(chunk_bytes // (n * 4))))
    subjects = CASE_SUBJECTS[name]
    if args.subjects:
        subjects = [x for x in subjects if x in args.subjects.split(",")]
    stores = {}
    for codec in ("raw", "zstd"):
        if codec == "zstd" and not any(x.endswith("-zstd") for x in subjects):
            continue
        path = os.path.join(args.workdir, f"{name}-{m}x{n}-{codec}.zarr")
        t0 = time.perf_counter()
        make_store(path, m, n, chunk_rows, codec)
        made.append(path)
        stores[codec] = {"path": path, "codec": "none" if codec == "raw" else "zstd",
                         "nbytes": m * n * 4, "stored_bytes": store_dir_size(path),
                         "chunk_rows": chunk_rows, "write_seconds": time.perf_counter() - t0}
    stores.setdefault("zstd", dict(stores["raw"], codec="zstd (not written)"))
    case = {"name": name, "m": m, "n": n, "s": s, "hyper": spec["hyper"],
            "store": stores["raw"]["path"], "store_zstd": stores["zstd"]["path"],
            "settle": 0 if args.quick else args.settle,
            "repeats": args.repeats or (1 if args.quick else CASE_REPEATS[name])}
    return name, spec, case, stores, subjects


def measure(plans, args, repeats):
    """{(case, subject): raw result} of every subject of every case."""
    raw = {}
    if args.quick:  # one worker process for everything: quick, RSS is not per subject
        print("quick: all subjects in one worker process", flush=True)
        return spawn([{"case": c, "subject": x} for _, _, c, _, subs in plans for x in subs],
                     repeats, args.warmup, args.timeout)
    # A fresh process per subject, so that peak RSS is its own; rounds go over all
    # cases and subjects in turn, so that a burst of load from elsewhere does not
    # fall on one subject (or one case of a ratio) only.
    for k in range(args.rounds):
        for name, _, case, _, subjects in plans:
            print(f"round {k + 1}/{args.rounds}, case {name}: {', '.join(subjects)}",
                  flush=True)
            for subject in subjects:
                got = spawn([{"case": case, "subject": subject}], case["repeats"],
                            args.warmup, args.timeout)[(name, subject)]
                raw[(name, subject)] = merge_rounds(raw.get((name, subject)), got)
    return raw


def summarise_case(plan, raw, quick):
    """The results file's entry of one case."""
    name, spec, case, stores, subjects = plan
    m, n, s = case["m"], case["n"], case["s"]
    print(f"case {name}: {m:,} x {n} -> {s}", flush=True)
    rows = [summarise(name, case, x, raw[(name, x)], stores) for x in subjects]
    add_ratios(rows)
    for r in rows:
        shown = (f"{r['seconds']:.3f} s, peak RSS {r['peak_rss_bytes'] / MiB:.0f} MiB"
                 if "seconds" in r else (r.get("skipped") or r.get("error")))
        print(f"  {r['label']}: {shown}", flush=True)
    return {"label": spec["label"] if not quick else f"{m:,} x {n} -> {s} (quick)",
            "m": m, "n": n, "s": s, "hyper": list(spec["hyper"]), "stores": stores,
            "subjects": rows, "cost_max_rel_diff": check_costs(rows),
            "repeats": case["repeats"]}


def write_outputs(report, out):
    """benchmarks.json, benchmarks.md and (with matplotlib) benchmarks.png in ``out``."""
    table = markdown(report)
    png = os.path.join(out, "benchmarks.png")
    why = chart(report, png)
    report["chart"], report["chart_skipped"] = (None if why else png), why
    report = provenance.finish(report)
    with open(os.path.join(out, "benchmarks.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "benchmarks.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"wrote {out}/benchmarks.json, benchmarks.md"
          + ("" if why else ", benchmarks.png") + f" in {report['run_seconds']:.0f} s")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0
    if args.probe:
        run_probe(args.probe[0], float(args.probe[1]))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    chunk_bytes = (args.chunk_mib or (0.25 if args.quick else 16)) * MiB
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    record = provenance.start("benchmarks/run.py", argv, args.allow_load or args.quick,
                              args.wait)
    report = {**record, "machine": machine_info(), "quick": args.quick, "repeats": repeats,
              "warmup": args.warmup, "rounds": 1 if args.quick else args.rounds, "cases": {}}
    made = []
    plans = [plan_case(name, args, chunk_bytes, made) for name in names]
    raw = measure(plans, args, repeats)
    for plan in plans:
        report["cases"][plan[0]] = summarise_case(plan, raw, args.quick)
    if not args.keep_data:  # the big stores (2.56 GB for S10) are not left behind
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
    report["demo"] = None if args.no_demo else bench_demo(args.workdir, args.quick,
                                                          args.timeout)
    if report["demo"]:
        d = report["demo"]
        print("demo: " + (d.get("error") or
                          f"training {d.get('train_seconds')} s (warm), "
                          f"{d.get('cold_train_seconds')} s (cold); launch to first "
                          f"iteration {d.get('first_iteration_seconds', 0):.2f} s"), flush=True)
    report["targets"] = targets(report["cases"], report["demo"])
    report["reported"] = reported(report["cases"])
    write_outputs(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
