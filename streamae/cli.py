"""The ``streamae`` command line.

Every user error ends in one line on stderr and exit status 2, without a
traceback. SIGINT exits 130 and SIGTERM 143; during training they first write
a checkpoint and print the command that resumes (docs/reliability.md).
"""

import argparse
import json
import os
import shlex
import signal
import sys
import threading
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
    _add_cluster_options(p)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _add_cluster_options(p):
    """--scheduler, --workers and --storage-option (docs/cluster.md)."""
    g = p.add_argument_group("cluster and storage")
    g.add_argument("--scheduler", default=None, metavar="SCHEDULER",
                   help="where tasks run: threads (default), synchronous, processes, or a "
                        "Dask scheduler address such as tcp://10.0.0.5:8786; results are "
                        "bit-identical on all of them")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="start a local Dask cluster of N single-threaded worker processes for "
                        "this run (with --scheduler threads or processes: N threads or "
                        "processes)")
    g.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                   type=_storage_option, metavar="KEY=VALUE",
                   help="fsspec option for s3:// and other URLs, repeatable, e.g. "
                        "endpoint_url=http://127.0.0.1:9000 or anon=true (VALUE is read as "
                        "JSON when it parses; a.b=VALUE nests); prefer credentials from the "
                        "environment: they are never printed")


def _storage_option(text):
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        # No value in the message: it may be a secret.
        raise argparse.ArgumentTypeError(
            "expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
    try:
        value = json.loads(value)
    except ValueError:
        pass
    return key, value


def storage_options(pairs):
    """``[(key, value)]`` from --storage-option into a dict; dotted keys nest."""
    options = {}
    for key, value in pairs or ():
        *parents, last = key.split(".")
        where = options
        for part in parents:
            where = where.setdefault(part, {})
            if not isinstance(where, dict):
                raise StreamaeError(f"--storage-option {key}: '{part}' is already set to a "
                                    "value, it cannot also hold keys")
        where[last] = value
    return options or None


def _add_checkpoint_options(p):
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="checkpoint file (default OUT.ckpt, beside the model)")
    g.add_argument("--checkpoint-every", metavar="K", type=_positive_int, default=None,
                   help="write the checkpoint every K iterations and at the end (default: "
                        "only on SIGINT/SIGTERM)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint (bit-identical to an uninterrupted run); "
                        "starts afresh if there is none")


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
    _add_checkpoint_options(p)

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
    _add_data_parsers(sub)
    return parser


def cmd_train(args):
    from . import _checkpoint
    from ._estimator import SparseAutoencoder
    from ._store import check_writable

    checkpoint = args.checkpoint or _checkpoint.default_path(args.out)
    options = storage_options(args.storage_options)
    model = SparseAutoencoder(n_hidden=args.hidden, rho=args.rho, beta=args.beta,
                              weight_decay=args.weight_decay, dtype=args.dtype, seed=args.seed)

    def fit(progress):
        model.fit(args.data, strategy=args.strategy, optimizer=args.optimizer,
                  max_iter=args.max_iter, history_size=args.history_size,
                  chunk_rows=args.chunk_rows, scheduler=args.scheduler, workers=args.workers,
                  storage_options=options, progress=progress, checkpoint=checkpoint,
                  checkpoint_every=args.checkpoint_every or 0, resume=args.resume,
                  overwrite=args.overwrite)

    if args.resume and not args.overwrite and _finished_and_saved(checkpoint, args):
        fit(progress=False)  # checks the checkpoint against the data and options; no evaluation
        print(f"the run in '{checkpoint}' had already finished ({model.n_iter_} iterations) "
              f"and its model is at {args.out}; nothing to do")
        return 0
    check_writable(args.out, args.overwrite, storage_options=options, what="model")
    if args.resume and not os.path.lexists(checkpoint):
        print(f"streamae: no checkpoint at '{checkpoint}'; starting from the beginning",
              file=sys.stderr)
    t0 = time.perf_counter()
    try:
        fit(progress=not args.quiet)
    except _checkpoint.TrainingInterrupted as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the checkpoint is written: finish quietly
            signal.signal(sig, signal.SIG_IGN)
        print(f"streamae: {exc}", file=sys.stderr)
        if exc.checkpoint is not None:
            print(f"resume with: {_resume_command(args)}", file=sys.stderr)
        return exc.exit_status
    except StreamaeError as exc:
        if getattr(exc, "checkpoint", None) is None:
            raise
        print(f"streamae: error: {exc}", file=sys.stderr)  # the iterations done are kept
        print(f"resume with: {_resume_command(args)}", file=sys.stderr)
        return 2
    model.save(args.out, overwrite=args.overwrite, storage_options=options)
    last = model.history_[-1]
    resumed = ("" if model.resumed_from_ is None
               else f", resumed from iteration {model.resumed_from_}")
    print(f"trained in {time.perf_counter() - t0:.1f} s{resumed}: {model.n_iter_} iterations, "
          f"cost {last['cost']:.6g}, mean rho_hat {last['rho_hat_mean']:.4g} "
          f"({model.stop_reason_}); model written to {args.out}")
    if model.guard_events_:
        print(f"streamae: {_guard_summary(model.guard_events_)}", file=sys.stderr)
    return 0


def _finished_and_saved(checkpoint, args):
    """True if the checkpoint's run is complete and ``--out`` holds exactly its weights
    (a run killed after writing its model); --resume then has nothing to do."""
    from . import _checkpoint
    from ._estimator import SparseAutoencoder
    from ._objective import flatten

    if not (os.path.exists(args.out) and os.path.exists(checkpoint)):
        return False
    try:
        saved = _checkpoint.read(checkpoint)
        theta = flatten(SparseAutoencoder.load(args.out).params_)
    except (StreamaeError, OSError):
        return False
    return (_checkpoint.finished(saved.state, args.max_iter)
            and theta.shape == saved.state.theta.shape
            and theta.tobytes() == saved.state.theta.tobytes())


def _resume_command(args):
    argv = list(args.argv)
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["streamae", *argv])


def _guard_summary(events):
    iterations = sorted({e["iteration"] for e in events})
    units = sorted({u for e in events for u in e["units"]})
    return (f"numerical guard: {len(events)} trial step(s) rejected because the objective "
            f"was not finite there (iteration(s) {_ints(iterations)}"
            + (f"; hidden unit(s) {_ints(units)} saturated" if units else "")
            + "); training continued from the last finite point")


def _ints(values):
    shown = ", ".join(str(v) for v in values[:10])
    return shown + (f", ... ({len(values)} in all)" if len(values) > 10 else "")


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


# ------------------------------------------------------------ data and pictures
# streamae patches / import / encode / show (docs/tutorial.md)

def _add_data_parsers(sub):
    p = sub.add_parser("patches", help="random image patches, normalised as the exercise, "
                                       "into a Zarr store")
    p.add_argument("out", help="Zarr array to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR",
                     help="folder of images (any format Pillow reads; searched recursively)")
    src.add_argument("--builtin", action="store_true",
                     help="the built-in natural photographs (scikit-image)")
    p.add_argument("--size", type=int, default=8, help="patch side P (default 8)")
    p.add_argument("--count", type=int, default=10000, help="patches N (default 10000)")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=True,
                   help="1/f-whiten each image first (default: yes)")
    p.add_argument("--channels", choices=("gray", "rgb"), default="gray",
                   help="grey patches (P*P values) or colour (3*P*P) (default gray)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--chunk-rows", type=_positive_int, default=None,
                   help="rows per chunk (default: about 16 MiB)")
    p.add_argument("--max-side", type=int, default=512,
                   help="downscale images to at most this many pixels a side first "
                        "(default 512; 0 keeps full size)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")

    p = sub.add_parser("import", help="a .npy file or Zarr array into a store ready to train on")
    p.add_argument("src", help=".npy file (memory-mapped) or Zarr array (path or URL)")
    p.add_argument("out", help="Zarr array to write")
    p.add_argument("--scale", choices=("none", "minmax", "minmax-all"), default="none",
                   help="min-max scale into [0, 1]: per column (minmax), over all values "
                        "(minmax-all), or not at all (default)")
    p.add_argument("--scale-from", metavar="STORE", default=None,
                   help="apply the scale recorded in STORE (an earlier import) instead")
    p.add_argument("--chunk-rows", type=_positive_int, default=None,
                   help="rows per chunk (default: about 16 MiB)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="output dtype (default: float64 for float64 input, else float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")

    p = sub.add_parser("encode", help="hidden activations of every row into a Zarr store")
    p.add_argument("model", help="model directory (from `streamae train`)")
    p.add_argument("data", help="Zarr array (path or URL) as wide as the model's input")
    p.add_argument("out", help="Zarr array to write, chunked like DATA")
    p.add_argument("--chunk-rows", type=_positive_int, default=None,
                   help="rows per chunk (default: DATA's chunks)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler: threads (default), synchronous, processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")

    p = sub.add_parser("show", help="PNG pictures of a model: filters, cost curve, rho_hat")
    p.add_argument("model", help="model directory (from `streamae train`)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the pictures (default: MODEL-pictures beside the model)")
    p.add_argument("--channels", choices=("auto", "gray", "rgb"), default="auto",
                   help="filter tiles in grey or colour (default auto: colour for 3*P*P "
                        "inputs)")
    p.add_argument("--patch-shape", default=None, metavar="HxW",
                   help="grey tile shape, e.g. 28x28 (default: most nearly square)")
    p.add_argument("--scale", type=_positive_int, default=None,
                   help="pixels per weight in filters.png (default: up to 8, ~640 px wide)")
    p.add_argument("--overwrite", action="store_true", help="replace existing pictures")


def _dask_progress(args):
    """A Dask progress bar on stderr for runs longer than a second (none with --quiet)."""
    import contextlib

    if getattr(args, "quiet", False):
        return contextlib.nullcontext()
    from dask.diagnostics import ProgressBar

    return ProgressBar(minimum=1.0, out=sys.stderr)


def cmd_patches(args):
    from ._patches import write_patches

    t0 = time.perf_counter()
    with _dask_progress(args):
        meta = write_patches(args.out, images=args.images, builtin=args.builtin,
                             size=args.size, count=args.count, whiten_images=args.whiten,
                             channels=args.channels, seed=args.seed, chunk_rows=args.chunk_rows,
                             max_side=args.max_side, dtype=args.dtype,
                             overwrite=args.overwrite, echo=print)
    norm = meta["normalization"]
    print(f"wrote {meta['count']} {meta['patch_size']}x{meta['patch_size']} {meta['channels']} "
          f"patches ({meta['width']} values each) from {meta['n_images']} image(s)"
          f"{', whitened' if meta['whiten'] else ''} to {args.out} in "
          f"{time.perf_counter() - t0:.1f} s: std {norm['std']:.4g}, clipped at "
          f"+/-{norm['clip']:.4g}, values in [0.1, 0.9], chunks of {meta['chunk_rows']} rows")
    return 0


def cmd_import(args):
    from ._import import import_array

    t0 = time.perf_counter()
    with _dask_progress(args):
        meta = import_array(args.src, args.out, scale=args.scale, scale_from=args.scale_from,
                            chunk_rows=args.chunk_rows, dtype=args.dtype,
                            overwrite=args.overwrite)
    m, n = meta["shape"]
    lo, hi = meta["value_range"]
    method = meta["scale"]["method"]
    print(f"imported {args.src} ({m} x {n}, {meta['source_dtype']}) to {args.out} "
          f"({meta['dtype']}, chunks of {meta['chunk_rows']} rows, scale {method}) in "
          f"{time.perf_counter() - t0:.1f} s; values in [{lo:.6g}, {hi:.6g}]")
    if lo < 0 or hi > 1:
        print("note: training needs values in [0, 1]; import again with --scale minmax "
              "(per column) or --scale minmax-all", file=sys.stderr)
    return 0


def cmd_encode(args):
    from ._encode import encode

    t0 = time.perf_counter()
    with _dask_progress(args):
        z = encode(args.model, args.data, args.out, chunk_rows=args.chunk_rows,
                   overwrite=args.overwrite, scheduler=args.scheduler)
    print(f"encoded {z.shape[0]} rows into {z.shape[1]} hidden activations ({z.dtype}) in "
          f"{args.out}, chunks of {z.chunks[0]} rows, in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_show(args):
    from ._errors import ParameterError
    from ._plots import show

    shape = None
    if args.patch_shape:
        try:
            shape = tuple(int(v) for v in args.patch_shape.lower().split("x"))
            assert len(shape) == 2 and min(shape) >= 1
        except (ValueError, AssertionError):
            raise ParameterError(f"--patch-shape must look like 8x8 (height x width), got "
                                 f"{args.patch_shape!r}") from None
    written = show(args.model, args.out, channels=args.channels, patch_shape=shape,
                   scale=args.scale, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "gradcheck": cmd_gradcheck}
COMMANDS.update({"patches": cmd_patches, "import": cmd_import, "encode": cmd_encode,
                 "show": cmd_show})


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself)."""


def _terminate(signum, frame):
    raise _Terminated


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except StreamaeError as exc:
        print(f"streamae: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"streamae: error: {exc.strerror or str(exc) or type(exc).__name__} "
              f"({getattr(exc, 'filename', '') or ''}); "
              "nothing existing was changed", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(f"streamae: interrupted by {'SIGTERM' if terminated else 'SIGINT'}",
              file=sys.stderr)
        return 143 if terminated else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
