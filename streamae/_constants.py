"""Names and choices shared by the library and the command line.

A light module (no imports): ``streamae.cli`` builds its options from it
without loading NumPy, Dask or Numba, and the library modules that check
these choices import them from here, so the two cannot drift apart.
"""

#: The model's parameters, in the order of the optimizer's vector (`streamae._objective`).
PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Passes over the data per evaluation (`streamae._engine`).
STRATEGIES = ("two-pass", "one-pass", "cached")
#: Full-batch optimizers (`streamae._optim`).
OPTIMIZERS = ("lbfgs", "gd")
#: Default gradient tolerance (``tol``, ``--tol``): an iteration after which
#: max |gradient| <= it ends the fit.
GRAD_TOL = 1e-5
#: How a local store's chunk reads may use the page cache (`streamae._chunkread`).
PAGE_CACHE_MODES = ("auto", "direct", "drop", "keep")
#: Kernel arithmetic.
DTYPES = ("float32", "float64")
#: Output layers.
DECODERS = ("sigmoid", "linear")
#: Warm-up choices (`streamae._warmup`).
WARMUPS = ("auto", "subsample", "none")

#: The checkpoint's file name inside the model's folder (`streamae train --out`).
CHECKPOINT_NAME = "checkpoint.npz"
#: Where older versions kept the checkpoint: beside the model, ``OUT`` + this.
LEGACY_CHECKPOINT_SUFFIX = ".ckpt"
#: The checkpoint rule, in the words `streamae train --help`, docs/cli.md and
#: docs/reliability.md all use (tests/test_cli_help.py compares them).
CHECKPOINT_RULE = (
    "The checkpoint is OUT/checkpoint.npz, inside the model's folder: deleting the "
    "model deletes it. It is written when the run ends (whatever ended it), on "
    "SIGINT/SIGTERM, when the cluster or the data fails mid-run, and every K "
    "iterations with --checkpoint-every K. --resume continues it, bit-identical to an "
    "uninterrupted run, also to extend a finished model with a larger --max-iter.")

#: A hidden unit is dead when its mean activation is below rho / DEAD_FACTOR,
#: saturated above DEAD_FACTOR * rho (`streamae._metrics`, `streamae._plots`).
DEAD_FACTOR = 10.0


def unit_thresholds(rho):
    """``(dead_below, saturated_above)`` for target ``rho``."""
    return rho / DEAD_FACTOR, min(DEAD_FACTOR * rho, (1.0 + rho) / 2.0)
