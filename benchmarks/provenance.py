"""What every benchmark results file records, and the quiet-machine guard.

Each script calls `start` before it measures anything and `finish` before it
writes its JSON: the file then holds the command, the commit, the date, the
machine and the load average before and after the run. `start` refuses a run
(after waiting for the machine to become quiet, up to ``--wait`` seconds)
when the 1-minute load average is above ``MAX_LOAD``; ``--allow-load`` runs
anyway and says so in the file (``load_allowed``), for smoke runs only.
"""

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# A 1-minute load average above one busy core means other work shares the
# machine: timings would measure it too.
MAX_LOAD = 1.0


def add_arguments(parser, wait=600.0):
    """The ``--allow-load`` and ``--wait`` options every benchmark script takes."""
    parser.add_argument("--allow-load", action="store_true",
                        help=f"run even when the 1-minute load average is above {MAX_LOAD} "
                             "(smoke runs; recorded in the results file)")
    parser.add_argument("--wait", type=float, default=wait,
                        help="seconds to wait for a quiet machine before refusing the run "
                             f"(default {wait:.0f})")


def quiet_enough(load, allow_load):
    """True when a run may start at this 1-minute load average."""
    return allow_load or load <= MAX_LOAD


def wait_for_quiet(allow_load, wait, poll=15.0):
    """The 1-minute load average once it is at most MAX_LOAD (or allowed).

    Raises SystemExit with a one-line message when the machine stays busy
    for ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        load = os.getloadavg()[0]
        if quiet_enough(load, allow_load):
            return load
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"refused: the 1-minute load average is {load:.2f} (above {MAX_LOAD}) after "
                f"waiting {wait:.0f} s; other work shares the machine. Stop it and run "
                "again, or pass --allow-load for a smoke run (recorded in the results)")
        print(f"load average {load:.2f} > {MAX_LOAD}: waiting for a quiet machine",
              file=sys.stderr, flush=True)
        time.sleep(poll)


def commit():
    """The checked-out commit, with ``+dirty`` when tracked files other than the
    results files have changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        # Results files written by earlier runs are not the code under test.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":!benchmarks/results")
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def machine():
    """CPU model, cores, memory, Python and library versions, thread settings."""
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("Model name", "L2 cache", "L3 cache"):
            found = re.search(rf"^{key}:\s*(.+)$", lscpu, re.M)
            if found:
                info[key.lower().replace(" ", "_")] = found.group(1).strip()
    except OSError:
        pass
    try:
        import psutil

        info["ram_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    versions = {}
    for pkg in ("streamae", "numpy", "numba", "llvmlite", "dask", "zarr", "scipy", "torch",
                "threadpoolctl"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "NUMBA_"))}
    return info


def start(script, argv, allow_load=False, wait=600.0):
    """The provenance of a run that starts now (after the quiet-machine guard).

    Parameters
    ----------
    script : str
        Path of the script from the repository root, e.g. ``benchmarks/run.py``.
    argv : list of str
        Its arguments, as given.

    Returns
    -------
    dict
        command, commit, date (UTC, ISO 8601), machine, load_average_before
        (1, 5 and 15 minutes), load_allowed; `finish` adds the rest.
    """
    wait_for_quiet(allow_load, wait)
    return {"command": " ".join(["python", script, *argv]), "commit": commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "load_average_before": list(os.getloadavg()),
            "load_allowed": bool(allow_load), "started": time.time()}


def finish(record):
    """``record`` with the load average after the run and its duration in seconds."""
    out = dict(record)
    out["load_average_after"] = list(os.getloadavg())
    out["run_seconds"] = time.time() - out.pop("started")
    return out
