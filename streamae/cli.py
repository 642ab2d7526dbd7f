"""The ``streamae`` command line.

Every user error ends in one line on stderr and exit status 2, without a
traceback. SIGINT exits 130 and SIGTERM 143; during training they first write
a checkpoint and print the command that resumes (docs/reliability.md).
"""

import argparse
import json
import re
import shlex
import signal
import sys
import threading
import time

# Nothing heavy at import: `streamae --help` must not load NumPy, Numba, SciPy,
# scikit-learn or Dask (streamae._errors imports scikit-learn). The commands import
# what they need; the choices come from the light streamae._constants.
from . import __version__
from ._constants import (
    CHECKPOINT_NAME,
    CHECKPOINT_RULE,
    DECODERS,
    DTYPES,
    GRAD_TOL,
    OPTIMIZERS,
    PAGE_CACHE_MODES,
    STRATEGIES,
    WARMUPS,
)

DOCS = ("docs: README.md and docs/ in the streamae source (docs/cli.md: every command; "
        "docs/tutorial.md: a first run; docs/bad-inputs.md: every error message)")


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless it already says its default
    (or has none to say: flags, required options, defaults computed at run time)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.required
                or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _positive_int(text, least=1):
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text}")
    return value


def _non_negative_int(text):
    return _positive_int(text, least=0)


def _add_chunk_rows(p, default_text, default=None, unit="chunk"):
    p.add_argument("--chunk-rows", type=_positive_int, default=default,
                   help=f"rows per {unit} (default: {default_text})")


def _add_quiet(p):
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_overwrite(p, what="an existing OUT"):
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def _add_strategy(p):
    p.add_argument("--strategy", choices=STRATEGIES, default="one-pass",
                   help="passes over the data per evaluation")


def _add_max_iter(p):
    p.add_argument("--max-iter", type=int, default=400,
                   help="iterations on the full data (the warm-up's are not counted)")


def _add_model_options(p):
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=25, help="hidden units")
    g.add_argument("--rho", type=float, default=0.01, help="target mean activation, in (0, 1)")
    g.add_argument("--beta", type=float, default=3.0, help="weight of the sparsity penalty")
    g.add_argument("--weight-decay", type=float, default=1e-4,
                   help="lambda, L2 penalty on W1 and W2")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="kernel arithmetic (sums are float64 either way)")
    g.add_argument("--seed", type=int, default=0, help="initialisation seed, >= 0")
    g.add_argument("--decoder", choices=DECODERS, default="sigmoid",
                   help="output layer: sigmoid (data in [0, 1]) or linear (any finite data, "
                        "e.g. from `streamae whiten`)")


def _add_run_options(p):
    g = p.add_argument_group("run")
    _add_strategy(g)
    g.add_argument("--warmup", choices=WARMUPS, default="auto",
                   help="start with L-BFGS on growing levels of a sample of the rows held in "
                        "memory, then the exact full-data fit: auto for 65,536 rows or more, "
                        "subsample always, none for the plain full-batch fit")
    g.add_argument("--warmup-iter", type=_non_negative_int, default=200, metavar="N",
                   help="the warm-up's own budget: iterations of its smallest level, half as "
                        "many for each level above (0: no warm-up)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs",
                   help="full-batch optimizer")
    _add_max_iter(g)
    g.add_argument("--tol", type=float, default=GRAD_TOL,
                   help="gradient tolerance: converged when max |gradient| <= TOL after an "
                        "iteration (0: never); with --early-stopping, also the least decrease "
                        "of the validation cost that counts as an improvement")
    g.add_argument("--history-size", type=_positive_int, default=100,
                   help="L-BFGS corrections kept (100 as minFunc)")
    _add_chunk_rows(g, "the store's chunks", unit="task")
    g.add_argument("--read-ahead", type=_non_negative_int, default=2, metavar="N",
                   help="chunk reads each task has in flight while its kernels compute "
                        "(memory: N + 1 chunks per task; 0: none)")
    g.add_argument("--page-cache", choices=PAGE_CACHE_MODES, default="auto",
                   help="how a local uncompressed store's reads use the page cache: auto reads a "
                        "store larger than half the memory with O_DIRECT (direct) and others "
                        "through the cache (keep); drop reads through the cache and drops the "
                        "pages")
    _add_cluster_options(p)
    _add_quiet(g)
    _add_overwrite(g, "existing outputs")


def _add_cluster_options(p):
    """--scheduler, --workers and --storage-option (docs/cluster.md)."""
    g = p.add_argument_group("cluster and storage")
    g.add_argument("--scheduler", default=None, metavar="SCHEDULER",
                   help="where tasks run: threads (the default), synchronous, processes, or a "
                        "Dask scheduler address such as tcp://10.0.0.5:8786; results are "
                        "bit-identical on all of them")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="start a local Dask cluster of N single-threaded worker processes for "
                        "this run (with --scheduler threads or processes: N threads or "
                        "processes; default: none, one thread per core)")
    g.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                   type=_storage_option, metavar="KEY=VALUE",
                   help="fsspec option for s3:// and other URLs, repeatable, e.g. "
                        "endpoint_url=http://127.0.0.1:9000 or anon=true (VALUE is read as "
                        "JSON when it parses; a.b=VALUE nests); prefer credentials from the "
                        "environment: they are never printed (default: none)")


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
    from ._errors import StreamaeError

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


def _add_validation_options(p):
    g = p.add_argument_group("validation")
    g.add_argument("--validation", metavar="PATH", default=None,
                   help="Zarr array of held-out rows (the data's columns), never trained on: "
                        "the cost on it is recorded in the metrics as validation_cost "
                        "(default: none)")
    g.add_argument("--validation-every", metavar="K", type=_positive_int, default=1,
                   help="evaluate --validation every K full-data iterations")
    g.add_argument("--early-stopping", action="store_true",
                   help="stop when the validation cost has not improved by --tol for "
                        "--n-iter-no-change checks; the model keeps the best check's weights")
    g.add_argument("--n-iter-no-change", metavar="N", type=_positive_int, default=10,
                   help="checks without improvement that stop the fit with --early-stopping")


def _add_checkpoint_options(p):
    g = p.add_argument_group("checkpoints", description=CHECKPOINT_RULE)
    g.add_argument("--checkpoint", metavar="PATH", default=None,
                   help=f"checkpoint file (default: OUT/{CHECKPOINT_NAME})")
    g.add_argument("--checkpoint-every", metavar="K", type=_positive_int, default=None,
                   help="also write the checkpoint every K iterations (default: at the end "
                        "and on SIGINT/SIGTERM only)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint (bit-identical to an uninterrupted run); "
                        "starts afresh if there is none")


def _command(sub, name, summary, description):
    """A subcommand parser: ``summary`` in the command list, ``description`` in its help."""
    return sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. "
                          f"{description}", epilog=DOCS, formatter_class=_HelpFormatter)


def build_parser():
    """The ``streamae`` argument parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="streamae", formatter_class=_HelpFormatter, epilog=DOCS,
        description="Exact full-batch sparse autoencoders on Zarr data larger than memory. "
                    "`streamae COMMAND --help` (or `streamae help COMMAND`) describes a "
                    "command.")
    parser.add_argument("-V", "--version", action="version", version=f"streamae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(sub, "train", "train on a Zarr array of shape (samples, features)",
                 "Full-batch L-BFGS (or gradient descent) on every row at every iteration; "
                 "writes the model, its metrics and, on an interrupt, a checkpoint.")
    p.add_argument("data", help="Zarr array path or URL, values in [0, 1] (any finite "
                                "values with --decoder linear)")
    p.add_argument("--out", required=True, help="model directory to write (a Zarr group)")
    _add_model_options(p)
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="start from the weights of a saved model (its hidden units; no "
                        "warm-up) instead of a random initialisation (default: random)")
    _add_run_options(p)
    _add_validation_options(p)
    _add_checkpoint_options(p)

    p = _command(sub, "demo", "the UFLDL exercise on built-in natural images",
                 "Samples 10000 8x8 patches of the built-in photographs, trains 25 hidden "
                 "units and draws their filters.")
    p.add_argument("--out", default="streamae-demo", help="output directory")
    _add_strategy(p)
    _add_max_iter(p)
    _add_quiet(p)
    _add_overwrite(p, "existing outputs")

    p = _command(sub, "photos", "sample photographs as JPEG files, to follow the tutorial",
                 "Writes the ten natural photographs bundled with scikit-image into a folder, "
                 "as a camera would (nothing is downloaded): a folder of photos for "
                 "`streamae patches --images`.")
    p.add_argument("folder", help="folder to create (or add to)")
    _add_overwrite(p, "photos of the same names")

    p = _command(sub, "gradcheck", "finite-difference gradient check of every strategy",
                 "Compares each strategy's gradient with central differences on a small "
                 "random problem in float64; exit status 1 if one differs by --tol or more.")
    p.add_argument("--rows", type=_positive_int, default=60, help="samples of the problem")
    p.add_argument("--visible", type=_positive_int, default=8, help="features (input width)")
    p.add_argument("--hidden", type=_positive_int, default=5, help="hidden units")
    _add_chunk_rows(p, "17: several chunks, the last one short", default=17)
    p.add_argument("--tol", type=float, default=1e-9,
                   help="largest relative difference that passes")
    _add_data_parsers(sub)

    p = sub.add_parser("help", help="help on streamae or on one command",
                       description="Prints the help of streamae, or of COMMAND.",
                       formatter_class=_HelpFormatter)
    p.add_argument("topic", nargs="?", metavar="COMMAND", help="a command")
    _add_whiten_parser(sub)
    parser.commands = sub.choices  # name -> the command's parser
    return parser


def cmd_train(args):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ._errors import StreamaeError, TrainingInterrupted
    from ._estimator import plan_run

    options = storage_options(args.storage_options)
    plan = plan_run(args.out, args.checkpoint, resume=args.resume, overwrite=args.overwrite,
                    max_iter=args.max_iter, storage_options=options)
    for note in plan.notes:
        print(f"streamae: {args.words(note)}", file=sys.stderr)
    model = _train_model(args, options)
    fit_kw = dict(checkpoint=plan.checkpoint, checkpoint_every=args.checkpoint_every or 0,
                  resume=args.resume, overwrite=args.overwrite, validation=args.validation)
    if plan.done:
        # Checks the checkpoint against the data and options; no evaluation, --out untouched.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.set_params(verbose=False).fit(args.data, **fit_kw)
        print(f"the run in '{plan.checkpoint}' had already finished ({model.n_iter_} "
              f"iterations) and its model is at {args.out}; nothing to do")
        return 0
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # the summary says whether the fit converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(args.data, **fit_kw)
    except TrainingInterrupted as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the checkpoint is written: finish quietly
            signal.signal(sig, signal.SIG_IGN)
        print(f"streamae: {args.words(exc)}", file=sys.stderr)
        if exc.checkpoint is not None:
            print(f"resume with: {_resume_command(args)}", file=sys.stderr)
        return exc.exit_status
    except StreamaeError as exc:
        if getattr(exc, "checkpoint", None) is None:
            raise
        # The iterations done are kept.
        print(f"streamae: error: {args.words(exc)}", file=sys.stderr)
        print(f"resume with: {_resume_command(args)}", file=sys.stderr)
        return 2
    model.save(args.out, overwrite=plan.replace, storage_options=options)
    _print_summary(model, args, time.perf_counter() - t0)
    return 0


def _train_model(args, options):
    """The estimator ``train`` fits: new, or from the weights of ``--init``."""
    from ._errors import ParameterError
    from ._estimator import SparseAutoencoder
    from ._options import RunOptions

    params = dict(
        rho=args.rho, beta=args.beta, weight_decay=args.weight_decay, dtype=args.dtype,
        random_state=args.seed, strategy=args.strategy, optimizer=args.optimizer,
        max_iter=args.max_iter, history_size=args.history_size, verbose=not args.quiet,
        warmup=args.warmup, warmup_iter=args.warmup_iter, decoder=args.decoder, tol=args.tol,
        validation_every=args.validation_every, early_stopping=args.early_stopping,
        n_iter_no_change=args.n_iter_no_change,
        run_options=RunOptions(scheduler=args.scheduler, workers=args.workers,
                               chunk_rows=args.chunk_rows, storage_options=options,
                               read_ahead=args.read_ahead, page_cache=args.page_cache))
    if args.init is None:
        return SparseAutoencoder(n_hidden=args.hidden, **params)
    model = SparseAutoencoder.load(args.init, storage_options=options)
    hidden = model.W1_.shape[0]
    given = any(a == "--hidden" or a.startswith("--hidden=") for a in getattr(args, "argv", []))
    if given and args.hidden != hidden:
        raise ParameterError(f"--hidden {args.hidden} differs from the {hidden} hidden units of "
                             f"--init {args.init}; drop --hidden, or start without --init")
    return model.set_params(n_hidden=hidden, warm_start=True, **params)


def _print_summary(model, args, seconds):
    last = model.history_[-1]
    resumed = ("" if model.resumed_from_ is None
               else f", resumed from iteration {model.resumed_from_}")
    init = f", started from {args.init}" if args.init else ""
    converged = ("converged" if model.converged_ else
                 "not converged: raise --max-iter, or resume with a larger --max-iter"
                 if model.stop_reason_.startswith("reached max_iter") else "not converged")
    best = model.best_validation_iteration_
    checked = "" if best is None else ", best validation cost {:.6g} at iteration {}".format(
        next(r["validation_cost"] for r in model.history_
             if "validation_cost" in r and r["iteration"] == best), best)
    print(f"trained in {seconds:.1f} s{resumed}{init}: {model.n_iter_} iterations, "
          f"cost {last['cost']:.6g}, mean rho_hat {last['rho_hat_mean']:.4g}{checked} "
          f"({model.stop_reason_}; {converged}); model written to {args.out}")
    if model.guard_events_:
        print(f"streamae: {_guard_summary(model.guard_events_)}", file=sys.stderr)


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


def cmd_photos(args):
    from ._demo import sample_photos

    sample_photos(args.folder, overwrite=args.overwrite)
    return 0


def cmd_gradcheck(args):
    import numpy as np

    from ._estimator import SparseAutoencoder
    from ._gradcheck import check_gradient, random_problem
    from ._options import RunOptions

    X, params = random_problem(args.rows, args.visible, args.hidden)
    print(f"central differences (eps 1e-4), float64, {args.rows} x {args.visible} -> "
          f"{args.hidden}, chunks of {args.chunk_rows} rows; "
          "relative difference norm(num - ana) / norm(num + ana):")
    worst = 0.0
    for strategy in STRATEGIES:
        options = RunOptions(chunk_rows=args.chunk_rows, scheduler="synchronous")

        def evaluate(p, strategy=strategy, options=options):
            model = SparseAutoencoder.from_weights(**p, rho=0.1, beta=3.0, weight_decay=1e-3,
                                                   dtype="float64", strategy=strategy,
                                                   run_options=options)
            return model.cost_and_grad(X)
        diff = check_gradient(evaluate, params)
        worst = max(worst, diff)
        print(f"  {strategy:9s} {diff:.3e}  {'ok' if diff < args.tol else 'FAIL'}")
    return 0 if np.isfinite(worst) and worst < args.tol else 1


# ------------------------------------------------------------ data and pictures
# streamae patches / import / encode / show (docs/tutorial.md)

def _add_data_parsers(sub):
    """patches, import, encode and show (docs/tutorial.md)."""
    _add_patches_parser(sub)
    _add_import_parser(sub)
    _add_encode_parser(sub)
    _add_show_parser(sub)


def _add_patches_parser(sub):
    p = _command(sub, "patches", "random image patches, normalised as the exercise, into a "
                 "Zarr store", "Each patch has its mean removed, is clipped at 3 standard "
                 "deviations and mapped to [0.1, 0.9], ready for `streamae train`.")
    p.add_argument("out", help="Zarr array to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR",
                     help="folder of images (any format Pillow reads; searched recursively)")
    src.add_argument("--builtin", action="store_true",
                     help="the built-in natural photographs (scikit-image)")
    p.add_argument("--size", type=int, default=8, help="patch side P")
    p.add_argument("--count", type=int, default=10000, help="patches N")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=True,
                   help="1/f-whiten each image first (default: yes)")
    p.add_argument("--channels", choices=("gray", "rgb"), default="gray",
                   help="grey patches (P*P values) or colour (3*P*P)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    _add_chunk_rows(p, "about 16 MiB")
    p.add_argument("--max-side", type=int, default=512,
                   help="downscale images to at most this many pixels a side first "
                        "(0 keeps full size)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the stored patches")
    _add_quiet(p)
    _add_overwrite(p)


def _add_import_parser(sub):
    p = _command(sub, "import", "a .npy file or Zarr array into a store ready to train on",
                 "Copies the rows chunk by chunk (never the whole array in memory), "
                 "optionally min-max scaled into [0, 1]; the scale is recorded so that other "
                 "data can be imported with the same one (--scale-from).")
    p.add_argument("src", help=".npy file (memory-mapped) or Zarr array (path or URL)")
    p.add_argument("out", help="Zarr array to write")
    p.add_argument("--scale", choices=("none", "minmax", "minmax-all"), default="none",
                   help="min-max scale into [0, 1]: per column (minmax), over all values "
                        "(minmax-all), or not at all")
    p.add_argument("--scale-from", metavar="STORE", default=None,
                   help="apply the scale recorded in STORE (an earlier import) instead "
                        "(default: none)")
    _add_chunk_rows(p, "about 16 MiB")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="output dtype (default: float64 for float64 input, else float32)")
    _add_quiet(p)
    _add_overwrite(p)


def _add_encode_parser(sub):
    p = _command(sub, "encode", "hidden activations of every row into a Zarr store",
                 "The features f(W1 x + b1) of a trained model, computed chunk by chunk.")
    p.add_argument("model", help="model directory (from `streamae train`)")
    p.add_argument("data", help="Zarr array (path or URL) as wide as the model's input")
    p.add_argument("out", help="Zarr array to write, chunked like DATA")
    _add_store_output_options(p, "DATA")


def _add_store_output_options(p, source):
    """--chunk-rows, --scheduler, --quiet and --overwrite of a command that writes
    a store chunked like its input ``source``."""
    _add_chunk_rows(p, f"{source}'s chunks")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler: threads (the default), synchronous, processes")
    _add_quiet(p)
    _add_overwrite(p)


def _add_show_parser(sub):
    p = _command(sub, "show", "PNG pictures of a model: filters, cost curve, rho_hat",
                 "Writes filters.png (one tile per hidden unit), cost.png and rho_hat.png.")
    p.add_argument("model", help="model directory (from `streamae train`)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the pictures (default: MODEL-pictures beside the model)")
    p.add_argument("--channels", choices=("auto", "gray", "rgb"), default="auto",
                   help="filter tiles in grey or colour (auto: colour for 3*P*P inputs)")
    p.add_argument("--patch-shape", default=None, metavar="HxW",
                   help="grey tile shape, e.g. 28x28 (default: most nearly square)")
    p.add_argument("--scale", type=_positive_int, default=None,
                   help="pixels per weight in filters.png (default: up to 8, ~640 px wide)")
    _add_overwrite(p, "existing pictures")


def _task_progress(args, label):
    """A bar of the Dask tasks done, labelled, for runs longer than a second (none with
    --quiet); log lines when stderr is not a terminal (streamae._progress)."""
    from ._progress import task_progress

    return task_progress(label, enabled=not getattr(args, "quiet", False))


def cmd_patches(args):
    from ._patches import write_patches

    t0 = time.perf_counter()
    with _task_progress(args, "patches"):
        meta = write_patches(args.out, images=args.images, builtin=args.builtin,
                             size=args.size, count=args.count, whiten_images=args.whiten,
                             channels=args.channels, seed=args.seed, max_side=args.max_side,
                             dtype=args.dtype, overwrite=args.overwrite, echo=print,
                             run_options={"chunk_rows": args.chunk_rows})
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
    with _task_progress(args, "import"):
        meta = import_array(args.src, args.out, scale=args.scale, scale_from=args.scale_from,
                            dtype=args.dtype, overwrite=args.overwrite,
                            run_options={"chunk_rows": args.chunk_rows})
    m, n = meta["shape"]
    lo, hi = meta["value_range"]
    method = meta["scale"]["method"]
    print(f"imported {args.src} ({m} x {n}, {meta['source_dtype']}) to {args.out} "
          f"({meta['dtype']}, chunks of {meta['chunk_rows']} rows, scale {method}) in "
          f"{time.perf_counter() - t0:.1f} s; values in [{lo:.6g}, {hi:.6g}]")
    if lo < 0 or hi > 1:
        print(f"note: {_range_note(args, meta)}", file=sys.stderr)
    return 0


def _range_note(args, meta):
    """What to do about imported values outside [0, 1]."""
    if args.scale_from:
        return (f"with the scale recorded in {args.scale_from}, {args.src} reaches beyond "
                "[0, 1]: its values range wider than the data that scale was taken from; "
                "train and encode need values in [0, 1]: clip it to that data's range "
                "before importing, or import all the data together with one scale")
    if meta["source_dtype"].startswith(("int", "uint")):
        return ("train needs values in [0, 1]; these are integers: import again with "
                "--scale minmax-all (one scale for all values), or divide them by their "
                "maximum first")
    return ("train needs values in [0, 1]; import again with --scale minmax (per column) "
            "or --scale minmax-all (one scale for all values), or train with --decoder linear")


def cmd_encode(args):
    from ._encode import encode

    t0 = time.perf_counter()
    with _task_progress(args, "encode"):
        z = encode(args.model, args.data, args.out, overwrite=args.overwrite,
                   run_options={"chunk_rows": args.chunk_rows, "scheduler": args.scheduler})
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
        except ValueError:
            shape = ()
        if len(shape) != 2 or min(shape) < 1:
            raise ParameterError(f"--patch-shape must look like 8x8 (height x width), got "
                                 f"{args.patch_shape!r}")
    written = show(args.model, args.out, channels=args.channels, patch_shape=shape,
                   scale=args.scale, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "photos": cmd_photos,
            "gradcheck": cmd_gradcheck}
COMMANDS.update({"patches": cmd_patches, "import": cmd_import, "encode": cmd_encode,
                 "show": cmd_show})


# ------------------------------------------------------------ whitening (streamae._whiten)

def _add_whiten_parser(sub):
    p = _command(sub, "whiten", "PCA or ZCA whitening of a Zarr array, streamed, into a new store",
                 "One pass accumulates the mean and the covariance, the small eigenproblem "
                 "runs here, a second pass writes the whitened rows; the transform is recorded "
                 "in the store (train on it with --decoder linear).")
    p.add_argument("src", metavar="IN", help="Zarr array (path or URL) of shape "
                                             "(samples, features)")
    p.add_argument("out", metavar="OUT", help="Zarr array to write, chunked like IN")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--zca", action="store_true",
                      help="ZCA whitening, every component kept (default, without --pca)")
    kind.add_argument("--pca", type=int, metavar="K", default=None,
                      help="PCA whitening onto the first K principal components (default: ZCA)")
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="added to each eigenvalue, in the data's variance units (default 0.1, "
                        "as the exercises; 0 requires every column to vary)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="output dtype (default: IN's float dtype)")
    _add_store_output_options(p, "IN")


def cmd_whiten(args):
    import numpy as np

    from ._whiten import whiten

    kind = "pca" if args.pca is not None else "zca"
    t0 = time.perf_counter()
    with _task_progress(args, "whiten"):
        z = whiten(args.src, args.out, kind=kind, n_components=args.pca, epsilon=args.epsilon,
                   dtype=args.dtype, overwrite=args.overwrite,
                   run_options={"chunk_rows": args.chunk_rows, "scheduler": args.scheduler})
    record = z.attrs["streamae"]["whitening"]
    S = np.asarray(record["eigenvalues"])
    k = record["n_components"]
    kept = S[:k].sum() / S.sum() if S.sum() > 0 else 1.0
    print(f"{kind.upper()}-whitened {z.shape[0]} rows of {record['n_features']} columns into "
          f"{k} ({z.dtype}) in {args.out}, epsilon {record['epsilon']:g}, in "
          f"{time.perf_counter() - t0:.1f} s; eigenvalues {S[0]:.4g} to {S[-1]:.4g}"
          + (f", {100 * kept:.1f}% of the variance kept" if kind == "pca" else ""))
    return 0


COMMANDS["whiten"] = cmd_whiten


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself)."""


def _terminate(signum, frame):
    raise _Terminated


# Python keywords whose flag is not the keyword with dashes ("--" + name.replace("_", "-")).
_FLAG_OF = {"n_hidden": "--hidden", "storage_options": "--storage-option",
            "whiten_images": "--whiten", "random_state": "--seed"}
_QUOTED_KEYWORD = re.compile(r"`(\w+)(?:=([^`]*))?`")


def in_cli_words(message, parser):
    """``message`` with the Python keywords it quotes as the flags of ``parser``.

    Library messages quote keywords in backquotes: `overwrite=True` becomes
    --overwrite, `resume=False` without --resume, `scale='minmax'` --scale minmax,
    `chunk_rows` --chunk-rows. A keyword that is not an option of ``parser``
    stays as it is.
    """
    flags = set(_flags(parser))

    def flag(match):
        name, value = match.groups()
        option = _FLAG_OF.get(name, "--" + name.replace("_", "-"))
        if option not in flags:
            return match.group(0)
        if value in (None, "True"):
            return option
        if value == "False":
            return f"without {option}"
        return f"{option} {value.strip(chr(39) + chr(34))}"

    return _QUOTED_KEYWORD.sub(flag, message)


def _flags(parser):
    """The option strings of ``parser`` (``--hidden``, ``-h``, ...)."""
    return [f for a in parser._actions for f in a.option_strings]


def _command_parser(parser, command):
    """The parser of ``command`` (or ``parser`` itself)."""
    return parser.commands.get(command, parser)


def _help(parser, topic=None):
    """Print the help of ``parser`` or of its command ``topic``; exit status."""
    if topic is None:
        parser.print_help()
        return 0
    if topic not in parser.commands:
        parser.error(f"no command {topic!r}; choose from {', '.join(parser.commands)}")
    parser.commands[topic].print_help()
    return 0


def _parse(parser, argv):
    """``argv`` parsed; a mistyped command or option ends with the usage of the command
    it belongs to and the nearest spelling ("did you mean --hidden?"), exit status 2."""
    import difflib

    commands = parser.commands
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in commands and argv.index(first) == 0:
        near = difflib.get_close_matches(first, list(commands), n=1)
        if near:
            parser.error(f"no command {first!r}; did you mean {near[0]!r}? (choose from "
                         f"{', '.join(commands)})")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = _command_parser(parser, args.command)
        options = [f for f in _flags(command) if f.startswith("--")]
        guesses = [difflib.get_close_matches(u.split("=")[0], options, n=1)
                   for u in unknown if u.startswith("-")]
        near = [g[0] for g in guesses if g]
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command in (None, "help"):
        return _help(parser, getattr(args, "topic", None))
    args.argv = argv
    args.words = lambda message: in_cli_words(str(message), _command_parser(parser, args.command))
    from ._errors import StreamaeError, cli_wording

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with cli_wording():
            return COMMANDS[args.command](args)
    except StreamaeError as exc:
        print(f"streamae: error: {args.words(exc)}", file=sys.stderr)
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
