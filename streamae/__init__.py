"""streamae: exact full-batch sparse autoencoders on data larger than memory.

Layout, from the maths outwards (kernels -> passes over the data ->
optimizer -> estimator / CLI):

kernels and the objective
- ``_kernels``   Numba kernels: the objective's sums on one batch of rows, the
  moments, the whitening of rows
- ``_objective`` `Objective` (its decoder variants): the passes' per-batch
  kernels, named partial sums, the KL term and the assembly; `Hyper`

passes over the data
- ``_data``      the user's data as a row-chunked `Dataset`
- ``_chunkread`` Zarr chunks read with one copy, read ahead, never a vanished store
- ``_chunkfiles`` many small chunk files read in one compiled loop, without the GIL
- ``_tree``      the fixed-shape reduction tree; how partial results combine (sums, moments)
- ``_passes``    `Pass`: every pass over a dataset, a kernel over streamed runs
  of batches reduced in the fixed tree or written in output chunks
- ``_engine``    one evaluation of (cost, gradient): one or two reduction passes
- ``_cluster``   `Runner`: where the tasks run; ``_backends`` (threads,
  processes, clusters), ``_workers`` (worker set-up), ``_failures`` (what a
  cluster's exceptions mean)
- ``_options``   `RunOptions`: scheduler, workers and chunking, shared by every function

training
- ``_optim``     full-batch L-BFGS and gradient descent
- ``_warmup``    the warm-up on a subsample
- ``_fitloop``   one training run: optimizer loop, progress, checkpoints, signals
- ``_checkpoint`` exact resume: optimizer state + data fingerprint, written atomically
- ``_interrupt`` stopping at an iteration boundary on SIGINT / SIGTERM
- ``_metrics``   training metrics (the data variance: from the first pass's reads)
- ``_estimator`` the `SparseAutoencoder` estimator (scikit-learn transformer)

data tools (each a pass, or two, over a store)
- ``_import``    arrays imported into Zarr (scale statistics, the copy)
- ``_images``, ``_patches``  images in; patches sampled, normalised, streamed into Zarr
- ``_whiten``    streaming PCA/ZCA whitening (moments, then the whitened write)
- ``_encode``    hidden activations, written to Zarr or collected in memory

interface and output
- ``_store``, ``_output``  model groups, and new row-chunked Zarr arrays
- ``_atomic``    atomic local writes (temporary sibling, fsync, rename)
- ``_validation`` checks of user options (integers, ranges, widths, fitted)
- ``_progress``  labelled progress of long phases: tqdm bars, or log lines
- ``_plots``     pictures: the filter grid and the training charts
- ``_errors``    the exceptions users see (one-line messages)
- ``cli``        the ``streamae`` command

The public names are imported on first use, so the command's help and
``import streamae`` stay fast.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names and the private module that defines each. They are imported on
# first use (PEP 562), so that `import streamae.cli` and `streamae --help` do not
# load NumPy, Numba, SciPy or Dask.
_EXPORTS = {
    "CheckpointError": "_errors",
    "TrainingInterrupted": "_errors",
    "ClusterError": "_errors",
    "encode": "_encode",
    "STRATEGIES": "_constants",
    "DataError": "_errors",
    "MemoryBudgetError": "_errors",
    "NumericalError": "_errors",
    "OutputExistsError": "_errors",
    "ParameterError": "_errors",
    "StreamaeError": "_errors",
    "NotFittedError": "_errors",
    "RunOptions": "_options",
    "SparseAutoencoder": "_estimator",
    "import_array": "_import",
    "MetricsLog": "_metrics",
    "reference_cost_and_grad": "_objective",
    "write_patches": "_patches",
    "show": "_plots",
    "whiten": "_whiten",
    "OutputWriteError": "_errors",
    "MissingDependencyError": "_errors",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamae' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from ._constants import STRATEGIES
    from ._encode import encode
    from ._errors import (
        CheckpointError,
        ClusterError,
        DataError,
        MemoryBudgetError,
        MissingDependencyError,
        NotFittedError,
        NumericalError,
        OutputExistsError,
        OutputWriteError,
        ParameterError,
        StreamaeError,
        TrainingInterrupted,
    )
    from ._estimator import SparseAutoencoder
    from ._import import import_array
    from ._metrics import MetricsLog
    from ._objective import reference_cost_and_grad
    from ._options import RunOptions
    from ._patches import write_patches
    from ._plots import show
    from ._whiten import whiten


__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "ClusterError",
    "DataError",
    "MetricsLog",
    "MemoryBudgetError",
    "MissingDependencyError",
    "NotFittedError",
    "NumericalError",
    "OutputExistsError",
    "OutputWriteError",
    "ParameterError",
    "RunOptions",
    "SparseAutoencoder",
    "StreamaeError",
    "TrainingInterrupted",
    "encode",
    "import_array",
    "reference_cost_and_grad",
    "show",
    "whiten",
    "write_patches",
    "__version__",
]
