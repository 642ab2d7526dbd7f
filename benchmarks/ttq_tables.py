"""Tables of the time-to-quality results (imported by render_docs and time_to_quality)."""

import math
import statistics

LABELS = {
    "streamae default": "streamae, defaults (the warm-up as shipped)",
    "streamae warmup=none": 'streamae, `warmup="none"`',
    "scipy L-BFGS-B": "SciPy L-BFGS-B (maxcor 100), NumPy float32 in memory",
    "torch LBFGS": "PyTorch LBFGS (strong Wolfe, history 100, max_iter {max_iter} per step), "
                   "in memory",
    "torch adam": "PyTorch Adam, mini-batch, rho_hat per batch (best grid setting per column)",
    "torch sgd": "PyTorch SGD, momentum 0.9, mini-batch, rho_hat per batch "
                 "(best grid setting per column)",
}


SHORT = {"streamae default": "streamae (defaults)", "streamae warmup=none":
         'streamae (`warmup="none"`)', "scipy L-BFGS-B": "SciPy L-BFGS-B",
         "torch LBFGS": "PyTorch LBFGS"}


def level_name(level):
    """0.05 -> 'best + 5%', 0.001 -> 'best + 0.1%'."""
    return "best + " + f"{level * 100:g}%"


def spread(values, spec):
    """'median (min-max)' of the values, or the one value when they are all equal."""
    med = format(statistics.median(values), spec)
    lo, hi = format(min(values), spec), format(max(values), spec)
    return med if lo == hi else f"{med} ({lo}-{hi})"


def reached_cell(hits):
    """Seconds and passes to a tolerance over the rounds of one subject."""
    got = [h for h in hits if h is not None]
    if not got:
        return "not reached"
    cell = (f"{spread([h[0] for h in got], '.1f')} s, "
            f"{spread([h[1] for h in got], '.1f')} passes")
    return cell if len(got) == len(hits) else f"{cell} ({len(got)} of {len(hits)} rounds)"


def setting_text(s):
    return f"batch {s['batch']:,}, lr {s['lr']:.3g}, {s['schedule']}"


def grid_cells(result, method):
    """The cells of a minibatch method's row: the best setting of each column."""
    by_level = result["grid_best"][method]
    cells = []
    for level in result["levels"]:
        best = by_level[str(level)]
        hit = best["reached"]
        cells.append("not reached by any setting" if hit is None else
                     f"{hit[0]:.1f} s, {hit[1]:.1f} passes ({setting_text(best['setting'])})")
    runs = [r for r in result["grid"] if r["setting"]["method"] == method]
    last = min(runs, key=lambda r: r["points"][-1][2])
    low = min(runs, key=lambda r: min(p[2] for p in r["points"]))
    cells.append(f"{last['points'][-1][2]:.6f} ({setting_text(last['setting'])})")
    cells.append(f"{min(p[2] for p in low['points']):.6f} ({setting_text(low['setting'])})")
    return cells


def ttq_table(result):
    """The Markdown table of one time_to_quality.py results file."""
    levels = result["levels"]
    head = ["subject", *[level_name(lv) for lv in levels], "final exact cost",
            "best point"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lbfgs = next((r for r in result["runs"] if r["subject"] == "torch LBFGS"), {})
    for name, row in result["subjects"].items():
        label = LABELS.get(name, name).format(max_iter=lbfgs.get("setting", {}).get(
            "max_iter", "?"))
        cells = [reached_cell(row["reached"][str(lv)]) for lv in levels]
        cells += [spread(row["final"], ".6f"), spread(row["best_point"], ".6f")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for method in result.get("grid_best", {}):
        lines.append(f"| {LABELS.get('torch ' + method, method)} | "
                     + " | ".join(grid_cells(result, method)) + " |")
    return "\n".join(lines)


def grid_table(result):
    """Every minibatch setting: seconds to each tolerance, final and best point."""
    best, levels = result["best"], result["levels"]
    head = ["method", "batch", "lr", "schedule", *[level_name(lv) for lv in levels],
            "final", "best point"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for run in sorted(result["grid"], key=lambda r: (r["setting"]["method"],
                                                     r["setting"]["batch"],
                                                     r["setting"]["schedule"],
                                                     r["setting"]["lr"])):
        s = run["setting"]
        cells = [s["method"], f"{s['batch']:,}", f"{s['lr']:.3g}", s["schedule"]]
        for level in levels:
            hit = next(([t, p] for t, p, c in run["points"] if c <= best * (1 + level)), None)
            cells.append("-" if hit is None else f"{hit[0]:.1f} s")
        cells.append(f"{run['points'][-1][2]:.6f}" + (" (diverged)" if run.get("diverged")
                                                      else ""))
        cells.append(f"{min(p[2] for p in run['points']):.6f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _candidates(result, level):
    """(seconds, passes, who) of every subject that reached the tolerance: the median of
    its rounds (when every round reached it), or a minibatch method's best setting."""
    out = []
    for name, row in result["subjects"].items():
        hits = row["reached"][str(level)]
        if hits and all(h is not None for h in hits):
            out.append((statistics.median(h[0] for h in hits),
                        statistics.median(h[1] for h in hits), SHORT.get(name, name)))
    for method in result.get("grid_best", {}):
        for run in (r for r in result["grid"] if r["setting"]["method"] == method):
            hit = next(([t, p] for t, p, c in run["points"]
                        if c <= result["best"] * (1 + level)), None)
            if hit:
                out.append((hit[0], hit[1], f"PyTorch {method} ({setting_text(run['setting'])})"))
    return out


def first_sentence(result):
    """Who reaches each tolerance first, in seconds and in passes, whatever the answer."""
    parts = []
    for level in result["levels"]:
        got = _candidates(result, level)
        if not got:
            parts.append(f"{level_name(level)}: no subject in every round of its budget")
            continue
        by_time, by_passes = min(got), min(got, key=lambda g: (g[1], g[0]))
        parts.append(f"{level_name(level)}: first in time {by_time[2]} ({by_time[0]:.1f} s), "
                     f"in passes {by_passes[2]} ({by_passes[1]:.1f} passes)")
    return "; ".join(parts) + "."


def edge_sentence(result):
    """Whether the grid's best settings lie inside its learning rates."""
    from time_to_quality import LR_START

    added = sum(not any(math.isclose(r["setting"]["lr"], lr) for lr in
                        LR_START[r["setting"]["method"]]) for r in result["grid"])
    text = (f"The grid ran {len(result['grid'])} settings, {added} of them learning rates "
            "added because a best setting was at an edge of the grid")
    edge = result.get("grid_still_at_edge") or []
    if edge:
        return text + ("; after the cap on additions the best is still at an edge for: "
                       + ", ".join(f"{s['method']} {setting_text(s)}" for s in edge) + ".")
    return text + "; every best setting now lies inside the grid's learning rates."


def best_source_text(result):
    """Who reached the best exact cost, in words (from the runs themselves)."""
    for run in result["runs"]:
        if min(p[2] for p in run["points"]) == result["best"]:
            return f"{SHORT.get(run['subject'], run['subject'])}, round {run['round'] + 1}"
    for run in result.get("grid", []):
        if min(p[2] for p in run["points"]) == result["best"]:
            return f"PyTorch {run['setting']['method']} ({setting_text(run['setting'])})"
    return result["best_source"]  # a long reference fit, or another results file


def spacing_sentence(result):
    """How finely a mini-batch run's time to a tolerance is known: its points
    are kept at fixed times, so each best setting's crossing lies between the
    point that reached the tolerance and the one before it."""
    parts = []
    for method, by_level in result.get("grid_best", {}).items():
        for level in result["levels"]:
            best = by_level[str(level)]
            if not best["reached"]:
                continue
            points = result["grid"][best["index"]]["points"]
            k = next(i for i, p in enumerate(points) if p[2] <= (1 + level) * result["best"])
            t0, p0, c0 = points[k - 1]
            parts.append(f"{level_name(level)}: PyTorch {method} "
                         f"({setting_text(best['setting'])}) was at "
                         f"{c0 / result['best'] - 1:+.2%} at its point before, "
                         f"{t0:.1f} s and {p0:.2f} passes")
    if not parts:
        return ""
    spacing = result["budget"] / (len(result["grid"][0]["points"]) - 1)
    return (f"A mini-batch run keeps its weights every {spacing:.2f} s, so its time to a "
            "tolerance is known to within one interval: " + "; ".join(parts) + ".")
