"""The values the doc templates may show, each read or derived from a results file.

`context` returns a flat dict {dotted name: value}; `render_docs.fill` puts
them into the templates. Every value here comes from one JSON file of
benchmarks/results/ (or arithmetic on such values); the ``*.when`` values
say when, where and under what load that file was measured, and mark a run
that is not a record run (load above 1.0 at its start, ``--allow-load``, a
quick or reduced run).
"""

import json
import math
import os
import re
import statistics
import subprocess
import textwrap

import ttq_tables

MAX_LOAD = 1.0
HERE = os.path.dirname(os.path.abspath(__file__))


def _load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: benchmarks/RECORD.md says how to make it")
    with open(path) as f:
        return json.load(f)


def _git_date(root, path):
    out = subprocess.run(["git", "log", "-1", "--format=%as %h", "--", path], cwd=root,
                         capture_output=True, text=True).stdout.split()
    return out or [None, None]


def not_record(report, smoke_reason=None):
    """Why a results file is not a record run (empty when it is one)."""
    mach = report.get("machine") or {}
    load = report.get("load_average_before") or mach.get("load_average_at_start") or []
    reasons = [smoke_reason] if smoke_reason else []
    if report.get("load_allowed"):
        reasons.append("run with `--allow-load`")
    if load and load[0] > MAX_LOAD:
        reasons.append(f"the load average at its start was above {MAX_LOAD:g}")
    if report.get("quick"):
        reasons.append("a `--quick` run")
    return reasons


def note(report, smoke_reason=None):
    """' (not a record run)' for a results file that is not one, else ''."""
    return " (not a record run)" if not_record(report, smoke_reason) else ""


def when(report, root, path, smoke_reason=None):
    """One sentence: when and where the file was measured, the load, and whether it is
    a record run."""
    mach = report.get("machine") or {}
    date, commit = report.get("date"), report.get("commit")
    if date:
        stamp = f"measured {date[:10]} at commit {(commit or '?')[:7]}"
    else:
        day, short = _git_date(root, path)
        stamp = f"committed {day} ({short}; the file records no date)"
    load = report.get("load_average_before") or mach.get("load_average_at_start") or []
    after = report.get("load_average_after") or []
    cpu = mach.get("model_name")
    cores = mach.get("cpus") or mach.get("cpu_count") or report.get("cpu_count") or "?"
    text = (f"`{os.path.relpath(path, root)}`, {stamp}, " + (f"{cpu}, " if cpu else "")
            + f"{cores} cores")
    if load:
        text += f"; load average {load[0]:.1f} at the start" + (
            f", {after[0]:.1f} after" if after else "")
    reasons = not_record(report, smoke_reason)
    if reasons:
        text += (". **Not a record run** (" + "; ".join(reasons) + "): "
                 "[benchmarks/RECORD.md](../benchmarks/RECORD.md) has the command that "
                 "replaces it")
    return text + "."


# ---------------------------------------------------------------- one evaluation

def evaluation(results, root):
    """``eval.*``: benchmarks/results/benchmarks.json (benchmarks/run.py)."""
    import run

    path = os.path.join(results, "benchmarks.json")
    r = _load(results, "benchmarks.json")
    v = {"eval.when": when(r, root, path), "eval.note": note(r),
         "eval.tables": run.markdown(r).rstrip("\n"),
         "eval.minutes": (r.get("run_seconds") or r.get("seconds_total")) / 60,
         "eval.command": r["command"], "eval.cores": r["machine"]["cpus"]}
    for name, case in r["cases"].items():
        p = f"eval.{name}"
        raw, zstd = case["stores"]["raw"], case["stores"]["zstd"]
        v.update({f"{p}.m": case["m"], f"{p}.n": case["n"], f"{p}.s": case["s"],
                  f"{p}.costs_agree_to": case["cost_max_rel_diff"],
                  f"{p}.store_mb": raw["nbytes"] / 1e6,
                  f"{p}.chunk_mib": raw["chunk_rows"] * case["n"] * 4 / 2**20,
                  f"{p}.zstd_saving_pct": 100 * (1 - zstd["stored_bytes"] / raw["stored_bytes"]),
                  f"{p}.activations_mb": case["m"] * case["s"] * 4 / 1e6})
        for row in case["subjects"]:
            if "seconds" not in row:
                continue
            q = f"{p}.{row['subject']}"
            v.update({f"{q}.seconds": row["seconds"], f"{q}.min": min(row["seconds_all"]),
                      f"{q}.max": max(row["seconds_all"]), f"{q}.gflops": row["gflop_per_s"],
                      f"{q}.peak_mb": row["peak_rss_bytes"] / 1e6})
            if row.get("read_bytes_per_s"):
                v[f"{q}.read_gbs"] = row["read_bytes_per_s"] / 1e9
            for key in ("speedup_vs_numpy", "speedup_vs_torch", "time_over_gemm",
                        "time_over_gemm_one_pass"):
                if row.get(key) is not None:
                    v[f"{q}.{key}"] = row[key]
    v.update(_evaluation_ratios(v, r))
    return v


def _evaluation_ratios(v, r):
    """Ratios the prose quotes: median over median and fastest over fastest."""
    out = {}
    for case in r["cases"]:
        for a, b in (("numpy", "streamae-one-pass"), ("numpy", "streamae-two-pass"),
                     ("numpy", "streamae-cached"), ("streamae-two-pass", "streamae-one-pass"),
                     ("torch", "streamae-one-pass")):
            if f"eval.{case}.{a}.seconds" in v and f"eval.{case}.{b}.seconds" in v:
                key = f"eval.{case}.{a}/{b}"
                out[key] = v[f"eval.{case}.{a}.seconds"] / v[f"eval.{case}.{b}.seconds"]
                out[key + ".fastest"] = v[f"eval.{case}.{a}.min"] / v[f"eval.{case}.{b}.min"]
                out[key + ".pct"] = 100 * (out[key] - 1)
    for strategy in ("one-pass", "two-pass", "cached"):
        a, b = f"eval.S10.streamae-{strategy}.seconds", f"eval.S.streamae-{strategy}.seconds"
        if a in v and b in v:
            out[f"eval.S10/S.{strategy}"] = v[a] / v[b]
    rss10 = v.get("eval.S10.streamae-one-pass.peak_mb")
    rss1 = v.get("eval.S.streamae-one-pass.peak_mb")
    if rss10 and rss1:
        out["eval.S10/S.peak_pct"] = 100 * (rss10 / rss1 - 1)
    for key, value in (r.get("demo") or {}).items():
        if isinstance(value, (int, float)):
            out[f"eval.demo.{key}"] = value
    out["eval.settle"] = next(iter(r["cases"].values())).get("settle", 6)
    return out


# ---------------------------------------------------------------- object store

def object_store(results, root):
    """``s3.*``: benchmarks/results/object_store.json (benchmarks/object_store.py)."""
    path = os.path.join(results, "object_store.json")
    r = _load(results, "object_store.json")
    v = {"s3.when": when(r, root, path), "s3.rows": r["rows"], "s3.chunk_rows": r["chunk_rows"],
         "s3.store_mb": r["rows"] * r["cols"] * 4 / 1e6, "s3.costs_agree_to": r["costs_agree_to"],
         "s3.chunks": math.ceil(r["rows"] / r["chunk_rows"])}
    subjects = list(dict.fromkeys(x["subject"] for x in r["results"]))
    head = "| store | " + " | ".join(subjects) + " |"
    lines = [head, "|---" + "|---:" * len(subjects) + "|"]
    for store, label in (("local", "local disk"), ("s3", "S3 on 127.0.0.1")):
        cells = []
        for x in (x for x in r["results"] if x["store"] == store):
            cell = (f"{x['seconds']:.3f} s [{min(x['seconds_all']):.3f}-"
                    f"{max(x['seconds_all']):.3f}]")
            if x["mb_per_s"]:
                cell += f" ({x['mb_per_s'] / 1e3:.2f} GB/s)"
            elif x["subject"] != "one-pass":
                cell += f" ({x['over_one_pass']:.2f}x)"
            cells.append(cell)
            v[f"s3.{store}.{x['subject']}"] = x["seconds"]
            v[f"s3.{store}.{x['subject']}.over"] = x["over_one_pass"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    v["s3.table"] = "\n".join(lines)
    return v


# ---------------------------------------------------------------- out of core

OOC_ROWS = [("disk_limit_s", "disk limit"), ("compute_limit_s", "compute limit (in memory)"),
            ("cached data (page cache)", "the store in the page cache"),
            ("cold one-pass", "**cold one-pass** (default)"),
            ("cold one-pass, no read-ahead", "cold one-pass, no read-ahead"),
            ("cold one-pass, pages dropped", "cold one-pass, pages dropped"),
            ("cold one-pass, through the page cache", "cold one-pass, through the page cache"),
            ("cold two-pass", "cold two-pass"), ("cold cached strategy", "cold cached strategy")]


def _key(name):
    """A case name as a placeholder name: 'cold one-pass, no read-ahead' ->
    'cold_one-pass_no_read-ahead'."""
    return re.sub(r"[ ,()]+", "_", name).strip("_")


def _ooc_cell(store, key, ratio=True):
    x = store.get(key)
    if x is None:
        return "-"
    if not isinstance(x, dict):
        return f"{x:.2f}"
    seconds = x.get("median_s", x.get("seconds"))
    spread = (f"{min(x['all_s']):.2f}-{max(x['all_s']):.2f}" if len(x.get("all_s", [])) > 1
              else None)
    inner = "; ".join(t for t in (spread, f"{x['over_max_limit']:.2f}x" if ratio else None)
                      if t)
    return f"{seconds:.2f}" + (f" ({inner})" if inner else "")


def out_of_core(results, root):
    """``ooc.*`` and ``ooc32.*``: out_of_core.json and out_of_core_32gb.json."""
    path, path32 = (os.path.join(results, n) for n in ("out_of_core.json",
                                                        "out_of_core_32gb.json"))
    r, big = _load(results, "out_of_core.json"), _load(results, "out_of_core_32gb.json")
    stores = r["stores"]
    lines = ["| seconds per evaluation (ratio: over the larger limit) | "
             + " | ".join(stores) + " |", "|---" + "|---:" * len(stores) + "|"]
    for key, label in OOC_ROWS:
        lines.append(f"| {label} | " + " | ".join(
            _ooc_cell(s, key, ratio=key.startswith("cold")) for s in stores.values()) + " |")
    v = {"ooc.when": when(r, root, path), "ooc.table": "\n".join(lines), "ooc.gb": r["gb"],
         "ooc.rows": r["rows"], "ooc.chunk_mib": r["chunk_rows"] * r["cols"] * 4 / 2**20,
         "ooc.chunks": math.ceil(r["rows"] / r["chunk_rows"]),
         "ooc.rounds": (f"median of {r['repeats']} interleaved rounds" if r.get("interleaved")
                        else f"median of {r['repeats']} repeats of each case in a row (the "
                        "file predates interleaved rounds)")}
    for label, s in stores.items():
        v[f"ooc.{label}.bytes_on_disk_gb"] = s["bytes_on_disk"] / 1e9
        for key, _ in OOC_ROWS:
            x = s.get(key)
            if isinstance(x, dict):
                v[f"ooc.{label}.{_key(key)}"] = x["median_s"]
                v[f"ooc.{label}.{_key(key)}.over"] = x["over_max_limit"]
            elif x is not None:
                v[f"ooc.{label}.{_key(key)}"] = x
    if "uncompressed" in stores and "zstd" in stores:
        u, z = stores["uncompressed"], stores["zstd"]
        v["ooc.zstd_decode_factor"] = (z["cached data (page cache)"]["median_s"]
                                       / u["cached data (page cache)"]["median_s"])
        v["ooc.zstd_bytes_factor"] = u["bytes_on_disk"] / z["bytes_on_disk"]
    v.update(_out_of_core_big(big, root, path32))
    return v


def _out_of_core_big(r, root, path):
    big = r["larger_than_memory"]
    keys = [("disk_limit_s", "disk limit"), ("compute_limit_s", "compute limit (scaled)"),
            ("cold one-pass", "**cold one-pass** (default: O_DIRECT, read-ahead 2)"),
            ("cold one-pass, no read-ahead", "cold one-pass, no read-ahead"),
            ("cold one-pass, pages dropped", "cold one-pass, pages dropped"),
            ("cold two-pass", "cold two-pass")]
    lines = ["| seconds per evaluation (ratio: over the larger limit) | "
             f"{big['gb']:g} GB store |", "|---|---:|"]
    lines += [f"| {label} | {_ooc_cell(big, key, ratio=key.startswith('cold'))} |"
              for key, label in keys]
    v = {"ooc32.when": when(r, root, path), "ooc32.note": note(r), "ooc32.table": "\n".join(lines),
         "ooc32.gb": big["gb"], "ooc32.rows": big["rows"],
         "ooc32.memory_gib": big["machine_memory_bytes"] / 2**30,
         "ooc32.disk_gbs": big["bytes_on_disk"] / big["disk_limit_s"] / 1e9,
         "ooc32.chunks": math.ceil(big["rows"] / r["chunk_rows"]),
         "ooc32.chunk_mib": r["chunk_rows"] * r["cols"] * 4 / 2**20}
    for key, _ in keys:
        x = big[key]
        v[f"ooc32.{_key(key)}"] = x["seconds"] if isinstance(x, dict) else x
        if isinstance(x, dict):
            v[f"ooc32.{_key(key)}.over"] = x["over_max_limit"]
    v["ooc32.two/one"] = big["cold two-pass"]["seconds"] / big["cold one-pass"]["seconds"]
    own = big.get("own_process")
    v["ooc32.own_peak"] = (
        f"{own['peak_rss_bytes'] / 1e6:,.0f} MB at its peak ({own['rss_before_bytes'] / 1e6:,.0f}"
        " MB before the first evaluation)" if own else
        "not measured yet in a process of its own (the results file predates that "
        "measurement; its `peak_rss_bytes` is of a process that also held another store's "
        "rows in memory, so it is not quoted)")
    return v


# ---------------------------------------------------------------- small chunks, whitening

def small_chunks(results, root):
    """``small.*``: benchmarks/results/small_chunks.json (benchmarks/small_chunks.py)."""
    path = os.path.join(results, "small_chunks.json")
    r = _load(results, "small_chunks.json")
    lines = ["| store | one chunk per task | grouped (default) |", "|---|---:|---:|"]
    for codec, s in r["stores"].items():
        one, grouped = s["one_chunk_per_task"]["median_s"], s["grouped"]["median_s"]
        a, b = s["one_chunk_per_task"]["all_s"], s["grouped"]["all_s"]
        lines.append(f"| {codec} | {one:.3f} s [{min(a):.3f}-{max(a):.3f}] "
                     f"| {grouped:.3f} s [{min(b):.3f}-{max(b):.3f}] ({one / grouped:.1f}x) |")
    reduced = None if r["rows"] == 400_000 else f"{r['rows']:,} rows instead of 400,000"
    return {"small.when": when(r, root, path, reduced), "small.table": "\n".join(lines),
            "small.rows": r["rows"], "small.chunk_rows": r["chunk_rows"],
            "small.chunks": math.ceil(r["rows"] / r["chunk_rows"]),
            "small.chunk_kb": r["chunk_bytes"] / 1e3, "small.repeats": r["repeats"]}


def passes(results, root):
    """``passes.*``: benchmarks/results/passes.json (benchmarks/passes.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("passes_benchmark",
                                                  os.path.join(HERE, "passes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = os.path.join(results, "passes.json")
    r = _load(results, "passes.json")
    counts = sorted(int(c) for c in r["chunks"])
    first, last = str(counts[0]), str(counts[-1])
    reduced = None if r["rows"] == 1_000_000 else f"{r['rows']:,} rows instead of 1,000,000"
    out = {"passes.when": when(r, root, path, reduced), "passes.table": module.table(r, counts),
           "passes.rows": r["rows"], "passes.cols": r["cols"], "passes.workers": r["workers"],
           "passes.repeats": r["repeats"], "passes.fewest": counts[0], "passes.most": counts[-1],
           "passes.labels": " / ".join(k for k in r["chunks"][first] if k in module._LABELS)}
    for label, cells in r["chunks"][last].items():
        if label not in module._LABELS:
            continue
        worst = max(cells[name]["ratio_to_fewest_chunks"] for name in module.PASSES)
        out[f"passes.{label}.worst_chunk_ratio"] = worst
        met = r["targets_met"][label]
        out[f"passes.{label}.met"] = ", ".join(
            f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in met.items())
    return out


def commits(results, root):
    """``commits.*``: benchmarks/results/commits.json (benchmarks/commits.py)."""
    r = _load(results, "commits.json")
    return {"commits.when": when(r, root, os.path.join(results, "commits.json")),
            "commits.base": r["base"], "commits.repeats": len(r["seconds_per_evaluation"]["head"]),
            "commits.max_iter": r["max_iter"], "commits.base_s": r["median"]["base"],
            "commits.head_s": r["median"]["head"], "commits.ratio": r["head_over_base"],
            "commits.command": r["command"]}


def wide(results, root):
    """``wide.*``: benchmarks/results/wide_warmup.json (benchmarks/wide_warmup.py)."""
    r = _load(results, "wide_warmup.json")
    warm = [v for k, v in r["phases"].items() if k != "full"]
    full = r["phases"]["full"]
    return {"wide.when": when(r, root, os.path.join(results, "wide_warmup.json")),
            "wide.rows": r["rows"], "wide.cols": r["n_visible"], "wide.hidden": r["n_hidden"],
            "wide.gb": r["store_bytes"] / 1e9, "wide.stride": r["plan"]["stride"],
            "wide.levels": len(r["plan"]["levels"]), "wide.warm_iter": sum(
                v["records"] - 1 for v in warm), "wide.warm_passes": warm[-1]["passes"],
            "wide.warm_cost": warm[-1]["cost"], "wide.max_iter": r["max_iter"],
            "wide.warm_budget": sum(r["plan"]["iterations"]),
            "wide.passes": full["passes"], "wide.cost": full["cost"],
            "wide.seconds": r["wall_seconds"]}


def colour_tail(results, root):
    """``tail.*``: benchmarks/results/colour_tail.json (benchmarks/colour_tail.py)."""
    r = _load(results, "colour_tail.json")
    levels = r["levels"]
    lines = ["| method (from the same weights) | " + " | ".join(
        f"best + {100 * level:g}%" for level in levels) + " | cost after the budget |",
        "|---" * (len(levels) + 2) + "|"]
    for name, m in r["methods"].items():
        cells = [f"{m['reached'][str(level)]:.1f} passes" if str(level) in m["reached"]
                 else "not reached" for level in levels]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {m['last_cost']:.6f} ({100 * (m['last_cost'] / r['best'] - 1):+.3f}%, "
                       f"{m['last_passes']:.1f} passes) |")
    return {"tail.when": when(r, root, os.path.join(results, "colour_tail.json")),
            "tail.start": r["start_passes"], "tail.passes": r["passes"],
            "tail.table": "\n".join(lines), **_tail_drift(r["drift"], r["best"])}


def _tail_drift(d, best):
    """``tail.drift_*``: the default fit's distance to its far point (colour_tail.py's
    ``drift``), a table row per point and the last point's figures for the prose."""
    lines = ["| point | passes | cost over best | distance to the far point | share of the "
             f"{d['units']} units farthest off | encoder cosine: smallest, 5%, median |",
             "|---|---|---|---|---|---|"]
    for q in d["points"]:
        c = q["cosine"]
        lines.append(f"| {q['label']} | {q['passes']:.1f} | {100 * q['cost_over_best']:+.3f}% | "
                     f"{100 * q['relative_distance']:.1f}% | {100 * q['top_share']:.0f}% | "
                     f"{c['min']:.2f}, {c['p05']:.2f}, {c['median']:.3f} |")
    last = d["points"][-1]
    return {"tail.drift_table": "\n".join(lines), "tail.drift_units": d["units"],
            "tail.drift_passes": d["reference_passes"], "tail.hidden": d["hidden"],
            "tail.drift_over_best": 100 * (d["reference_cost"] / best - 1),
            "tail.drift_last_label": last["label"],
            "tail.drift_last_distance": 100 * last["relative_distance"],
            "tail.drift_last_share": 100 * last["top_share"],
            "tail.drift_last_p05": last["cosine"]["p05"]}


def whitening(results, root):
    """``whiten.*``: benchmarks/results/whiten_memory.json (benchmarks/whiten_memory.py)."""
    path = os.path.join(results, "whiten_memory.json")
    r = _load(results, "whiten_memory.json")
    chunks = sorted({x["chunks"] for x in r["runs"]})
    by = {(x["scheduler"], x["chunks"]): x for x in r["runs"]}
    head = "| scheduler | " + " | ".join(
        f"{c} chunks ({by[next(k for k in by if k[1] == c)]['rows']:,} rows, "
        f"{by[next(k for k in by if k[1] == c)]['store_mib']:.0f} MiB)" for c in chunks) + " |"
    lines = [head, "|---" + "|---" * len(chunks) + "|"]
    for scheduler in dict.fromkeys(x["scheduler"] for x in r["runs"]):
        lines.append(f"| {scheduler} | " + " | ".join(
            f"{by[scheduler, c]['peak_rss_mib']:.0f} MiB, {by[scheduler, c]['seconds']:.1f} s"
            for c in chunks) + " |")
    # The same scheduler at each row count: how much the peak grows with the rows.
    spread = max(max(p) / min(p) - 1 for p in (
        [x["peak_rss_mib"] for x in r["runs"] if x["scheduler"] == s]
        for s in {x["scheduler"] for x in r["runs"]}))
    reduced = None if chunks == [10, 80] else "other chunk counts than the default 10 and 80"
    return {"whiten.when": when(r, root, path, reduced), "whiten.table": "\n".join(lines),
            "whiten.row_factor": chunks[-1] / chunks[0],
            "whiten.peak_spread_pct": 100 * spread}


# ---------------------------------------------------------------- cluster

def cluster(results, root, values):
    """``cluster.*``: cluster_overhead.json and the two chunk-count sweeps."""
    path = os.path.join(results, "cluster_overhead.json")
    r = _load(results, "cluster_overhead.json")
    s = r["seconds_per_evaluation"]
    wire = r["bytes_per_evaluation"]
    big, small = (wire[k] for k in sorted(wire, key=lambda k: -int(k.split("_")[0])))
    reduced = None if r["rows"] == 1_000_000 else f"{r['rows']:,} rows instead of 1,000,000"
    v = {"cluster.when": when(r, root, path, reduced), "cluster.note": note(r, reduced),
         "cluster.rows": r["rows"], "cluster.chunks": r["chunks"], "cluster.workers": r["workers"],
         "cluster.chunk_rows": r["chunk_rows"], "cluster.repeats": r["repeats"],
         "cluster.threads": s["threads"]["median"], "cluster.threads.min": s["threads"]["min"],
         "cluster.lc": s["local_cluster"]["median"], "cluster.lc.min": s["local_cluster"]["min"],
         "cluster.ratio": s["local_cluster"]["median"] / s["threads"]["median"],
         "cluster.ratio.fastest": s["local_cluster"]["min"] / s["threads"]["min"],
         "cluster.bit_identical": "bit-identical" if r["bit_identical"] else "**not** identical",
         "cluster.small_rows": int(sorted(wire, key=lambda k: int(k.split("_")[0]))[0]
                                   .split("_")[0]),
         "cluster.param_kb": r["parameter_bytes_float32"] / 1e3,
         "cluster.data_mb": r["data_bytes"] / 1e6}
    for label, w in (("big", big), ("small", small)):
        for key, value in w.items():
            v[f"cluster.wire.{label}.{key}"] = value / 1e3
    v.update(_sweeps(results, root))
    v.update(_ten_tb(values))
    return v


def _sweeps(results, root):
    mem, store = _load(results, "cluster_sweep_memory.json"), _load(results,
                                                                     "cluster_sweep_store.json")
    lines = ["| chunks | threads, memory | LocalCluster, memory | threads, store "
             "| LocalCluster, store | client (threads / cluster) |",
             "|---:|---:|---:|---:|---:|---:|"]
    clients = []
    for k in sorted(mem["chunks"], key=int):
        m, s = mem["chunks"][k], store["chunks"][k]
        ms = [1e3 * x[w]["client_seconds_median"] for x in (m, s)
              for w in ("threads", "local_cluster")]
        clients += ms
        lines.append(f"| {int(k):,} | {m['threads']['seconds_median']:.3f} s "
                     f"| {m['local_cluster']['seconds_median']:.3f} s "
                     f"| {s['threads']['seconds_median']:.3f} s "
                     f"| {s['local_cluster']['seconds_median']:.3f} s "
                     f"| {min(ms[0], ms[2]):.1f}-{max(ms[0], ms[2]):.1f} / "
                     f"{min(ms[1], ms[3]):.1f}-{max(ms[1], ms[3]):.1f} ms |")
    first, last = sorted(mem["chunks"], key=int)[0], "4000"
    ratio = {f"cluster.sweep.{d}.{w}": r["chunks"][last][w]["seconds_median"]
             / r["chunks"][first][w]["seconds_median"]
             for d, r in (("memory", mem), ("store", store))
             for w in ("threads", "local_cluster")}
    return {"cluster.sweep.when": when(mem, root, os.path.join(results,
                                                                 "cluster_sweep_memory.json")),
            "cluster.sweep.table": "\n".join(lines), "cluster.sweep.client_min": min(clients),
            "cluster.sweep.client_max": max(clients), "cluster.sweep.repeats": mem["repeats"],
            "cluster.sweep.first": int(first), **ratio}


def _ten_tb(values):
    """The 10 TB estimate's arithmetic on the measured per-core rate of case S."""
    rate = values["eval.S.streamae-one-pass.gflops"] / values["eval.cores"]  # per core
    m = 1e13 / (64 * 4)
    flops = 12 * m * 64 * 25
    per_core_mbs = rate * 1e9 / (12 * 64 * 25) * 64 * 4 / 1e6  # data bytes per second
    task_s = 2**30 / (per_core_mbs * 1e6)
    tasks = 9300
    exponent = math.floor(math.log10(flops))
    return {"ten.rate": rate, "ten.mbs": per_core_mbs,
            "ten.flops": f"{flops / 10**exponent:.1f} x 10^{exponent}",
            "ten.all_busy_s": flops / (8000 * rate * 1e9), "ten.task_s": task_s,
            "ten.eval_s": math.ceil(tasks / 8000) * task_s,
            "ten.second_wave_pct": 100 * (tasks - 8000) / 8000}


# ---------------------------------------------------------------- time to quality

def time_to_quality(results, root, dataset):
    """``ttq.DATASET.*``: time_to_quality_DATASET.json and its ``_cold`` twin."""
    import datasets

    out = {}
    for suffix, prefix in (("", f"ttq.{dataset}"), ("_cold", f"ttq.{dataset}.cold")):
        name = f"time_to_quality_{dataset}{suffix}.json"
        r = _load(results, name)
        d = r["dataset"]
        reduced = (None if d["rows"] == datasets.DEFAULT_ROWS[dataset] else
                   f"{d['rows']:,} rows instead of {datasets.DEFAULT_ROWS[dataset]:,}")
        out.update({f"{prefix}.when": when(r, root, os.path.join(results, name), reduced),
                    f"{prefix}.note": note(r, reduced),
                    f"{prefix}.table": ttq_tables.ttq_table(r),
                    f"{prefix}.rows": d["rows"], f"{prefix}.budget": r["budget"],
                    f"{prefix}.repeats": r["repeats"], f"{prefix}.best": r["best"],
                    f"{prefix}.best_source": ttq_tables.best_source_text(r),
                    f"{prefix}.weights": d["weights"], f"{prefix}.hidden": d["n_hidden"],
                    f"{prefix}.command": r["command"],
                    f"{prefix}.first": ttq_tables.first_sentence(r)})
        for subject, key in (("streamae default", "default"),
                             ("streamae warmup=none", "none")):
            for level in r["levels"]:
                hits = r["subjects"][subject]["reached"][str(level)]
                cell = ttq_tables.reached_cell(hits)
                out[f"{prefix}.{key}.{level * 100:g}pct"] = cell
                out[f"{prefix}.{key}.{level * 100:g}pct.after"] = (
                    f"not within the {r['budget']:.0f} s budget" if cell == "not reached"
                    else f"after {cell}")
        per_pass = [x["seconds_per_pass"] for x in r["runs"] if x.get("seconds_per_pass")]
        out[f"{prefix}.pass_time"] = (
            f"One full-data evaluation of a streamae fit took "
            f"{statistics.median(per_pass):.2f} s (median over its runs). " if per_pass else "")
        if r["grid"]:
            out[f"{prefix}.grid_table"] = ttq_tables.grid_table(r)
            out[f"{prefix}.grid_size"] = len(r["grid"])
            out[f"{prefix}.at_edge"] = ttq_tables.edge_sentence(r)
            out[f"{prefix}.spacing"] = ttq_tables.spacing_sentence(r)
            out[f"{prefix}.grid_methods"] = grid_methods(r["grid"])
    return out


def grid_methods(grid):
    """Which methods the run's grid had, and how many settings."""
    names = {"adam": "Adam", "sgd": "SGD with momentum"}
    ran = [m for m in names if any(g["setting"]["method"] == m for g in grid)]
    missing = [names[m] for m in names if m not in ran]
    return (f"The grid of this run: {' and '.join(names[m] for m in ran)}, "
            f"{len(grid)} settings"
            + (f" ({' and '.join(missing)} not run: `--methods {','.join(ran)}`)."
               if missing else "."))


def ttq_settings():
    """``ttq.*`` constants of the grid (time_to_quality.py)."""
    import time_to_quality as ttq

    span = ttq.LR_START["adam"][-1] / ttq.LR_START["adam"][0]
    return {"ttq.batches": ", ".join(f"{b:,}" for b in ttq.BATCHES), "ttq.lr_step": ttq.LR_STEP,
            "ttq.lr_span": span, "ttq.points": ttq.POINTS,
            **{f"ttq.lr_start.{m}": ", ".join(f"{lr:.3g}" for lr in lrs)
               for m, lrs in ttq.LR_START.items()}}


# ---------------------------------------------------------------- the tutorial

def tutorial(results, root):
    """``tut.*``: benchmarks/results/tutorial.json (benchmarks/tutorial.py): the
    tutorial's command outputs and the figures of its prose."""
    path = os.path.join(results, "tutorial.json")
    r = _load(results, "tutorial.json")
    steps, fig = r["steps"], r["figures"]
    photos = steps["photos"]["stdout"]
    v = {"tut.when": when(r, root, path), "tut.cores": r["machine"]["cpus"],
         "tut.photos.count": len(photos),
         "tut.photos.out": "\n".join(photos[:2] + ["..."] + photos[-1:]
                                     if len(photos) > 4 else photos),
         "tut.patches.attrs": _attrs_text(fig["patches_attrs"]),
         "tut.warmup": _warmup_phrase(fig["patches_attrs"]["count"], fig["warmup_min_rows"])}
    for name in ("patches", "train", "show", "encode"):
        v[f"tut.out.{name}"] = "\n".join(steps[name]["stdout"])
    for block, names in (("colour", ("colour_patches", "colour_train", "colour_show")),
                         ("zca", ("raw_patches", "whiten", "zca_train", "zca_show"))):
        v[f"tut.out.{block}"] = "\n".join(line for n in names for line in steps[n]["stdout"])
    for key in ("gray", "colour", "colour_decay", "zca", "zca_eps003"):
        v.update(_fit_values(f"tut.{key}", fig[key]))
    gray = fig["gray"]
    v["tut.gray.within_pct"] = math.ceil(100 * max(
        gray["rho"] - gray["rho_hat_min"], gray["rho_hat_max"] - gray["rho"]) / gray["rho"])
    v["tut.gray.collapse"] = _collapse_phrase(gray)
    # The train command's summary line says how the fit stopped.
    converged = "; converged)" in steps["train"]["stdout"][0]
    v["tut.gray.stopped"] = (f"here after {gray['iteration']} iterations" if converged else
                             f"not here: this run stopped at --max-iter {gray['iteration']}")
    v["tut.gray.rho_hat_start_min"], v["tut.gray.rho_hat_start_max"] = gray["rho_hat_start"]
    raw = fig["raw_attrs"]
    v.update({"tut.raw.variance": fig["raw_variance_per_value"],
              "tut.raw.eps_over_variance": fig["epsilons"]["zca"] / fig["raw_variance_per_value"],
              "tut.raw.n_images": raw["n_images"],
              "tut.raw.images": ", ".join(i.rsplit(".", 1)[0] for i in raw["images"]),
              "tut.zca.minutes": steps["zca_train"]["seconds"] / 60,
              "tut.rule.flat_pct": 100 * fig["filter_rule"]["flat_share"],
              "tut.rule.grey_pct": 100 * fig["filter_rule"]["grey_share"]})
    v.update(_scale_values(r["scale"]))
    v.update(_import_values(r["import"], gray["n_hidden"]))
    return v


def _collapse_phrase(fit):
    """When the sparsity term fell below 1% of its start (benchmarks/tutorial.py)."""
    at = fit["sparsity_collapse"]
    if at is None:
        return f"stays above 1% of that over the run's {fit['iteration']} iterations"
    phase = "of the warm-up" if at["phase"] == "warmup" else "of the fit"
    return f"falls below 1% of that by iteration {at['iteration']} {phase}"


def _attrs_text(attrs):
    """A store's ``attrs["streamae"]`` as the tutorial prints it: the dict's repr
    wrapped to the page, the list of images cut after its first."""
    items = []
    for key, value in attrs.items():
        text = repr(value)
        if key == "images" and len(value) > 1:
            text = f"[{value[0]!r}, ...]"
        items.append(f"{key!r}: {text}")
    return "\n".join(textwrap.wrap("{" + ", ".join(items) + "}", width=90,
                                   subsequent_indent=" ", break_long_words=False,
                                   break_on_hyphens=False))


def _warmup_phrase(rows, min_rows):
    """Whether the tutorial's patches are enough rows for the warm-up."""
    if rows >= min_rows:
        return f"{rows:,} rows are above the warm-up's {min_rows:,}"
    return f"{rows:,} rows are below the warm-up's {min_rows:,}: this run had none"


def _fit_values(prefix, f):
    """One fit's figures: its last record's metrics, the cost along the way, the
    kinds of its filters (colour models) as percentages."""
    v = {f"{prefix}.{k}": f[k] for k in (
        "iteration", "cost", "explained_variance", "dead_units", "saturated_units",
        "rho_hat_min", "rho_hat_max", "rho", "n_hidden", "sparsity_start", "sparsity")}
    dead, sat = f["dead_units"], f["saturated_units"]
    v[f"{prefix}.units"] = ("no dead or saturated units" if dead == sat == 0 else
                            f"{dead} dead and {sat} saturated unit(s)")
    marks = f["cost_at"]
    if marks:
        parts = [f"{c:.5g} at {'iteration ' if k == 0 else ''}{i}"
                 for k, (i, c) in enumerate(marks)]
        v[f"{prefix}.cost_at"] = (", ".join(parts[:-1]) + " and " + parts[-1]
                                  if len(parts) > 1 else parts[0])
    for kind, count in (f.get("filters") or {}).items():
        if kind != "units":
            v[f"{prefix}.{kind}"] = count
            v[f"{prefix}.{kind}_pct"] = 100 * count / f["filters"]["units"]
    return v


def _mib(nbytes):
    return nbytes / 2**20


def _size(nbytes):
    """Bytes on disk, as the table shows them."""
    if nbytes >= 10e9:
        return f"{nbytes / 1e9:.0f} GB"
    if nbytes >= 1e8:
        return f"{nbytes / 1e9:.1f} GB"
    return f"{nbytes / 1e6:.1f} MB"


def _duration(seconds):
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _scale_values(cases):
    """``tut.scale.table``: peak memory and wall time of ``patches`` per count."""
    lines = ["| `--count` | output on disk | peak memory | wall time |", "|---|---|---|---|"]
    for c in cases:
        if "skipped" in c:
            lines.append(f"| {c['count']:,} | not run: {c['skipped']} | - | - |")
            continue
        lines.append(f"| {c['count']:,} | {_size(c['bytes_on_disk'])} | "
                     f"{_mib(c['peak_rss_bytes']):.0f} MiB | {_duration(c['seconds'])} |")
    run = [c for c in cases if "skipped" not in c]
    peaks = [_mib(c["peak_rss_bytes"]) for c in run]
    return {"tut.scale.table": "\n".join(lines), "tut.scale.smallest_mib": peaks[0],
            "tut.scale.smallest": run[0]["count"], "tut.scale.largest": run[-1]["count"],
            "tut.scale.largest_mib": peaks[-1], "tut.scale.max_mib": max(peaks)}


def _import_values(r, hidden):
    """``tut.import.*``: peak memory of import and encode on the largest rows, and of
    the minmax-all imports of each row count."""
    every = r["zarr_minmax_all"]
    rows = sorted(every, key=int)
    return {"tut.import.rows": r["rows"], "tut.import.cols": r["cols"],
            "tut.import.gb": r["rows"] * r["cols"] * 4 / 1e9,
            "tut.import.chunk_mib": r["chunk_rows"] * r["cols"] * 4 / 2**20,
            "tut.import.npy_mib": _mib(r["npy_minmax"]["peak_rss_bytes"]),
            "tut.import.zarr_mib": _mib(r["zarr_minmax"]["peak_rss_bytes"]),
            "tut.import.encode_mib": _mib(r["encode"]["peak_rss_bytes"]),
            "tut.import.hidden": hidden,
            "tut.import.all_rows": " and ".join(f"{int(n):,}" for n in rows),
            "tut.import.all_mib": " and ".join(
                f"{_mib(every[n]['peak_rss_bytes']):.0f}" for n in rows)}


def context(results, root):
    """Every value the templates may use."""
    values = ttq_settings()
    for part in (evaluation, object_store, out_of_core, small_chunks, passes, whitening,
                 commits, wide, colour_tail, tutorial):
        values.update(part(results, root))
    values.update(cluster(results, root, values))
    for dataset in ("patches", "colour"):
        values.update(time_to_quality(results, root, dataset))
    return values

