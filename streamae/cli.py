"""The ``streamae`` command line.

Every user error ends in one line on stderr and exit status 2, without a
traceback; an interrupt exits 130.
"""

import argparse
import sys
import time

import numpy as np

from . import __version__
from ._engine import STRATEGIES
from ._errors import StreamaeError
from ._optim import OPTIMIZERS


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _add_model_options(p):
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=25, help="hidden units (default 25)")
    g.add_argument("--rho", type=float, default=0.01, help="target activation (default 0.01)")
    g.add_argument("--beta", type=float, default=3.0, help="sparsity weight (default 3)")
    g.add_argument("--weight-decay", type=float, default=1e-4,
                   help="lambda, L2 on W1 and W2 (default 1e-4)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="kernel arithmetic (default float32; sums are float64)")
    g.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")


def _add_run_options(p):
    g = p.add_argument_group("run")
    g.add_argument("--strategy", choices=STRATEGIES, default="one-pass",
                   help="passes over the data per evaluation (default one-pass)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs",
                   help="full-batch optimizer (default lbfgs)")
    g.add_argument("--max-iter", type=int, default=400, help="iterations (default 400)")
    g.add_argument("--history-size", type=_positive_int, default=100,
                   help="L-BFGS corrections kept (default 100, as minFunc)")
    g.add_argument("--chunk-rows", type=_positive_int, default=None,
                   help="rows per task (default: the store's chunks)")
    g.add_argument("--scheduler", default=None,
                   help="Dask scheduler: threads (default), synchronous, processes")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="streamae",
        description="Exact full-batch sparse autoencoders on Zarr data larger than memory.")
    parser.add_argument("--version", action="version", version=f"streamae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train on a Zarr array of shape (samples, features)")
    p.add_argument("data", help="Zarr array path or URL, values in [0, 1]")
    p.add_argument("--out", required=True, help="model directory to write (a Zarr group)")
    _add_model_options(p)
    _add_run_options(p)

    p = sub.add_parser("demo", help="the UFLDL exercise on built-in natural images")
    p.add_argument("--out", default="streamae-demo", help="output directory")
    p.add_argument("--strategy", choices=STRATEGIES, default="one-pass")
    p.add_argument("--max-iter", type=int, default=400)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    p = sub.add_parser("gradcheck", help="finite-difference gradient check of every strategy")
    p.add_argument("--rows", type=_positive_int, default=60)
    p.add_argument("--visible", type=_positive_int, default=8)
    p.add_argument("--hidden", type=_positive_int, default=5)
    p.add_argument("--chunk-rows", type=_positive_int, default=17)
    p.add_argument("--tol", type=float, default=1e-9)
    return parser


def cmd_train(args):
    from ._estimator import SparseAutoencoder
    from ._store import check_writable

    check_writable(args.out, args.overwrite, what="model")
    model = SparseAutoencoder(n_hidden=args.hidden, rho=args.rho, beta=args.beta,
                              weight_decay=args.weight_decay, dtype=args.dtype, seed=args.seed)
    t0 = time.perf_counter()
    model.fit(args.data, strategy=args.strategy, optimizer=args.optimizer,
              max_iter=args.max_iter, history_size=args.history_size,
              chunk_rows=args.chunk_rows, scheduler=args.scheduler, progress=not args.quiet)
    model.save(args.out, overwrite=args.overwrite)
    last = model.history_[-1]
    print(f"trained in {time.perf_counter() - t0:.1f} s: {model.n_iter_} iterations, "
          f"cost {last['cost']:.6g}, mean rho_hat {last['rho_hat_mean']:.4g} "
          f"({model.stop_reason_}); model written to {args.out}")
    return 0


def cmd_demo(args):
    from ._demo import run_demo

    run_demo(out=args.out, overwrite=args.overwrite, strategy=args.strategy,
             max_iter=args.max_iter, progress=not args.quiet)
    return 0


def cmd_gradcheck(args):
    from ._estimator import SparseAutoencoder
    from ._gradcheck import check_gradient, random_problem

    X, params = random_problem(args.rows, args.visible, args.hidden)
    print(f"central differences (eps 1e-4), float64, {args.rows} x {args.visible} -> "
          f"{args.hidden}, chunks of {args.chunk_rows} rows; "
          "relative difference norm(num - ana) / norm(num + ana):")
    worst = 0.0
    for strategy in STRATEGIES:
        def evaluate(p, strategy=strategy):
            model = SparseAutoencoder.from_weights(**p, rho=0.1, beta=3.0, weight_decay=1e-3,
                                                   dtype="float64")
            return model.cost_and_grad(X, strategy=strategy, chunk_rows=args.chunk_rows,
                                       scheduler="synchronous")
        diff = check_gradient(evaluate, params)
        worst = max(worst, diff)
        print(f"  {strategy:9s} {diff:.3e}  {'ok' if diff < args.tol else 'FAIL'}")
    return 0 if np.isfinite(worst) and worst < args.tol else 1


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "gradcheck": cmd_gradcheck}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StreamaeError as exc:
        print(f"streamae: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"streamae: error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''}); "
              "nothing existing was changed", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
