"""One evaluation's time at two commits, interleaved, on the same store.

Checks out ``--base`` (a commit, tag or branch) into a temporary git worktree
and, in alternating fresh processes, fits the same store with each version's
``SparseAutoencoder(warmup="none")`` for ``--max-iter`` iterations; a fit's
seconds per evaluation (from its ``history_``: the wall time between its
first and last records over the evaluations between them) is the figure.
Every process fits twice and reports the second fit, so that neither
version's kernel compilation or first reads are timed.

Run: python benchmarks/commits.py STORE --base 921e8c5 [--repeats 5] [--max-iter 20]
         [--json benchmarks/results/commits.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import provenance  # noqa: E402

CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
from streamae import SparseAutoencoder
def per_evaluation():
    model = SparseAutoencoder(max_iter={max_iter}, warmup="none", random_state=0)
    h = model.fit({store!r}).history_
    return (h[-1]["seconds"] - h[0]["seconds"]) / (h[-1]["evaluations"] - h[0]["evaluations"])
per_evaluation()
print(json.dumps(per_evaluation()))
"""


def seconds_per_evaluation(source, store, max_iter):
    """Run the child fit with ``source`` first on the import path."""
    env = dict(os.environ, PYTHONPATH=source)
    code = CHILD.format(store=os.path.abspath(store), max_iter=max_iter)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=source,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store", help="a Zarr store of values in [0, 1]")
    p.add_argument("--base", required=True, help="the commit to compare with this checkout")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-iter", type=int, default=20)
    p.add_argument("--json", default=os.path.join(HERE, "results", "commits.json"))
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    record = provenance.start("benchmarks/commits.py", argv, args.allow_load, args.wait)
    times = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base, args.base],
                       check=True, capture_output=True)
        try:
            for rnd in range(args.repeats):
                for name, source in (("base", base), ("head", ROOT)):
                    times[name].append(seconds_per_evaluation(source, args.store, args.max_iter))
                    print(f"round {rnd + 1}/{args.repeats}, {name}: "
                          f"{times[name][-1]:.4f} s per evaluation", flush=True)
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base],
                           check=False, capture_output=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {**provenance.finish(record), "store": args.store, "base": args.base,
              "max_iter": args.max_iter, "seconds_per_evaluation": times, "median": med,
              "head_over_base": med["head"] / med["base"]}
    print(f"median s per evaluation: base {med['base']:.4f}, head {med['head']:.4f} "
          f"(head/base {result['head_over_base']:.3f})")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
